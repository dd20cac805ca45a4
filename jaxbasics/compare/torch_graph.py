"""PyTorch's computational graph: recorded during the forward pass, walked by
``loss.backward()``, read here from the real objects (the JAX side is
:mod:`jaxbasics.chapter.graph`).

While the forward pass runs, every operation on a tensor that requires a gradient records a
node (``MulBackward0``, ``SigmoidBackward0``, ...) whose ``next_functions`` point at the
nodes of its inputs; a leaf parameter ends in an ``AccumulateGrad`` node, which adds into its
``.grad``. :func:`autograd_graph` starts at ``loss.grad_fn`` and follows ``next_functions``:
the graph is drawn in the direction the gradient flows, from the loss to the parameters. A
hook on each node (``Node.register_hook``) records the gradients it passes on to its inputs
while ``backward()`` runs, and each node is drawn with them (``dL/dz = -0.08166``); a
``TorchFunctionMode`` watches the forward pass so that each node can also show, labelled
``forward``, the (scalar) value of the tensor it made, and each edge its shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from jaxbasics.chapter.graph import Graph, Node


class _Recorder(TorchFunctionMode):
    """Remembers, for each autograd node made while active, the tensor it produced."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[Any, torch.Tensor] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                self.made.setdefault(t.grad_fn, t.detach())
        return out


def _shape(t: torch.Tensor) -> str:
    dtype = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
             torch.bfloat16: "bf16"}.get(t.dtype, str(t.dtype).removeprefix("torch."))
    return f"{dtype}[{','.join(map(str, t.shape))}]"


def _value(t: torch.Tensor | None) -> str | None:
    if t is None or t.numel() != 1:
        return None
    return f"{float(t.reshape(())):.4g}"


Forward = Callable[[], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def autograd_graph(forward: Forward, params: dict[str, torch.Tensor], *,
                   title: str = "PyTorch: recorded forward, walked by backward()"
                   ) -> Graph:
    """Run ``forward()``, then ``loss.backward()``, and return the recorded graph.

    Args:
      forward: returns the scalar loss, computed from ``params``, or ``(loss, names)`` where
        ``names`` maps a name to an intermediate tensor (``{"z": z, "a": a}``), by which the
        gradients passed on to it are written (``dL/dz``).
      params: leaf tensors with ``requires_grad``, by name.

    Returns one node per autograd node (kind ``"reverse"``: each is a step of the backward
    pass) whose ``value`` is the text of the gradients it passed on to its inputs, from a hook
    on the node during ``backward()`` (scalars only), and whose ``detail`` names them
    (``dL/da = -1.089``) with, labelled ``forward``, the value of the tensor it made; the loss
    as the ``"output"`` the walk starts from; one ``"param"`` node per parameter below its
    ``AccumulateGrad`` node, which shows the ``.grad`` that ``backward()`` left.

    Raises ``ValueError`` when the loss is not a scalar with a ``grad_fn``."""
    for p in params.values():
        p.grad = None
    recorder = _Recorder()
    with recorder:
        result = forward()
    loss, named = result if isinstance(result, tuple) else (result, {})
    if not (isinstance(loss, torch.Tensor) and loss.grad_fn is not None and loss.numel() == 1):
        raise ValueError("forward() must return a scalar loss computed from tensors that "
                         "require gradients")
    name_of = {id(p): n for n, p in params.items()}
    name_of_fn = {t.grad_fn: n for n, t in named.items() if t.grad_fn is not None}
    name_of_fn.setdefault(loss.grad_fn, "L")
    passed: dict[Any, tuple[torch.Tensor | None, ...]] = {}
    order: list[Any] = []
    seen: set[Any] = set()

    def collect(fn: Any) -> None:  # every node, hooked before backward() runs
        if fn is None or fn in seen:
            return
        seen.add(fn)
        order.append(fn)
        if type(fn).__name__ != "AccumulateGrad":
            fn.register_hook(lambda grad_inputs, _outputs, fn=fn: passed.__setitem__(
                fn, tuple(None if g is None else g.detach() for g in grad_inputs)))
        for nxt, _ in fn.next_functions:
            collect(nxt)

    collect(loss.grad_fn)
    loss.backward()

    def input_name(nxt: Any) -> str | None:
        if type(nxt).__name__ == "AccumulateGrad":
            return name_of.get(id(nxt.variable), "leaf")
        name = name_of_fn.get(nxt)
        return name if name is None or len(name) == 1 else f"({name})"

    g = Graph(title)
    top = g.add(Node("loss", "loss", "output", _value(loss.detach())))
    ids = {fn: f"n{k}" for k, fn in enumerate(order)}
    for fn in order:
        node_id, label = ids[fn], type(fn).__name__
        if label == "AccumulateGrad":
            var = fn.variable
            pname = name_of.get(id(var), "leaf")
            grad_text = _value(var.grad)
            g.add(Node(node_id, f"AccumulateGrad ({pname})", "reverse", grad_text,
                       None if grad_text is None else f"{pname}.grad = {grad_text}"))
            pid = f"p{node_id}"
            g.add(Node(pid, pname, "param", _value(var.detach())))
            g.edges.append((node_id, pid, f"grad {_shape(var)}"))
            continue
        grads = passed.get(fn, ())
        lines, values = [], []
        for (nxt, _), grad in zip(fn.next_functions, grads, strict=False):
            text = _value(grad) if nxt is not None else None
            if text is None:
                continue
            values.append(text)
            name = input_name(nxt)
            lines.append(f"dL/d{name} = {text}" if name else f"passes {text}")
        made = _value(recorder.made.get(fn))
        if made is not None:
            own = name_of_fn.get(fn)
            lines.append(f"forward: {own} = {made}" if own else f"forward value {made}")
        g.add(Node(node_id, label, "reverse", ", ".join(values) or None,
                   "\n".join(lines) or None))
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue  # an input that needs no gradient (x, y)
            src = recorder.made.get(nxt)
            shape = _shape(src) if src is not None else (
                _shape(nxt.variable) if type(nxt).__name__ == "AccumulateGrad" else "")
            g.edges.append((node_id, ids[nxt], shape))
    g.edges.insert(0, (top.id, ids[loss.grad_fn], _shape(loss)))
    return g


def neuron_autograd_graph() -> Graph:
    """The chapter's neuron in PyTorch at x=1.1, w=2.2, b=0, y=1: z = x·w + b, a = σ(z),
    L = BCE(a, y); nodes BinaryCrossEntropyBackward0 (passes dL/da = -1.089),
    SigmoidBackward0 (dL/dz = -0.08166), AddBackward0, MulBackward0 and AccumulateGrad for w
    (-0.08983) and b (-0.08166)."""
    import torch.nn.functional as F

    from jaxbasics.chapter.neuron import CHAPTER_EXAMPLE as ex

    w = torch.tensor([ex.w], requires_grad=True)
    b = torch.tensor([ex.b], requires_grad=True)
    x, y = torch.tensor([ex.x]), torch.tensor([ex.y])

    def forward() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        xw = x * w
        z = xw + b
        a = torch.sigmoid(z)
        return F.binary_cross_entropy(a, y), {"x·w": xw, "z": z, "a": a}

    return autograd_graph(forward, {"w": w, "b": b})


def simplenet_autograd_graph(seed: int = 0) -> Graph:
    """SimpleNet in PyTorch (``TorchSimpleNet``) with ``nn.BCELoss``, on the weights and batch
    of :func:`jaxbasics.chapter.simplenet.example` (those of the JAX side's
    :func:`jaxbasics.chapter.graph.simplenet_graphs`, of tour and of compare)."""
    from jaxbasics.chapter import simplenet
    from jaxbasics.compare.torch_reference import TorchSimpleNet
    from jaxbasics.compare.transfer import flax_to_torch

    model = TorchSimpleNet()
    flax_model, x, y = simplenet.example(seed)
    flax_to_torch(flax_model, model)
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    return autograd_graph(lambda: torch.nn.BCELoss()(model(xt), yt),
                          dict(model.named_parameters()))


MODELS = ("neuron", "simplenet")


def side_by_side(model: str, out_dir: str | Path, *, collapse: bool | None = None
                 ) -> dict[str, Any]:
    """Draw ``model``'s (``"neuron"`` or ``"simplenet"``) graphs side by side: PyTorch's
    autograd graph, JAX's forward jaxpr and the jaxpr of its gradient, into
    ``out_dir/<model>.png`` and ``.svg``, with the same graphs as Graphviz DOT (``.dot``) and
    Mermaid (``.mmd``) text. ``collapse`` draws chains of JAX operations as one node
    (default: for SimpleNet, whose gradient program has about 40 equations); the text files
    always hold every node.

    The neuron's three panels stand side by side, SimpleNet's one under the other, so that
    the picture reads at about 900 px wide.

    Returns ``{"png", "svg", "dot", "mermaid", "size_px", "nodes": {"torch", "jax_forward",
    "jax_grad"}, "equations": {...}, "drawn_nodes": {...}}``: node counts before and after
    collapsing, and the operations among them (:func:`jaxbasics.chapter.graph.program_size`,
    as ``jaxbasics tour`` counts them)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    from jaxbasics.chapter import graph as jgraph

    if model == "neuron":
        torch_side, (forward, grad) = neuron_autograd_graph(), jgraph.neuron_graphs()
    else:
        torch_side, (forward, grad) = simplenet_autograd_graph(), jgraph.simplenet_graphs()
    collapse = model == "simplenet" if collapse is None else collapse
    full = [torch_side, forward, grad]
    drawn = [torch_side, *(jgraph.collapse_chains(g) if collapse else g for g in (forward, grad))]
    keys = ("torch", "jax_forward", "jax_grad")
    sizes = dict(zip(keys, (jgraph.program_size(g) for g in full), strict=True))
    counts = {k: v["nodes"] for k, v in sizes.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subtitle = (f"PyTorch: {sizes['torch']['equations']} backward nodes, recorded while the "
                f"forward pass ran. JAX: {sizes['jax_forward']['equations']} equations forward, "
                f"{sizes['jax_grad']['equations']} in the gradient program "
                f"({sizes['jax_grad']['reverse']} of them the reverse sweep), traced and "
                f"transformed before anything ran"
                + ("; chains of JAX operations drawn as one node" if collapse else ""))
    rows = [[0, 1, 2]] if model == "neuron" else [[0], [1], [2]]
    files = jgraph.draw(drawn, out / model, subtitle=subtitle, rows=rows)
    dot, mermaid = out / f"{model}.dot", out / f"{model}.mmd"
    dot.write_text(jgraph.to_dot(full))
    mermaid.write_text(jgraph.to_mermaid(full))
    return {**files, "dot": str(dot), "mermaid": str(mermaid), "nodes": counts,
            "equations": {k: v["equations"] for k, v in sizes.items()},
            "drawn_nodes": dict(zip(keys, (g.count() for g in drawn), strict=True))}
