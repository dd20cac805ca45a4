"""PyTorch's computational graph: the tape that ``loss.backward()`` walks, read from the real
objects (the JAX side is :mod:`jaxbasics.chapter.graph`).

While the forward pass runs, every operation on a tensor that requires a gradient records a
node (``MulBackward0``, ``SigmoidBackward0``, ...) whose ``next_functions`` point at the
nodes of its inputs; a leaf parameter ends in an ``AccumulateGrad`` node, which adds into its
``.grad``. :func:`autograd_graph` starts at ``loss.grad_fn`` and follows ``next_functions``:
the graph is drawn in the direction the gradient flows, from the loss to the parameters. A
``TorchFunctionMode`` watches the forward pass so that each node can carry the shape and
(scalar) value of the tensor it made; after ``backward()``, each parameter's gradient is
written on its ``AccumulateGrad`` node.
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


def autograd_graph(forward: Callable[[], torch.Tensor], params: dict[str, torch.Tensor], *,
                   title: str = "PyTorch: the autograd graph loss.backward() walks") -> Graph:
    """Run ``forward()`` (it returns the scalar loss, computed from ``params``, leaf tensors
    with ``requires_grad``), then ``loss.backward()``, and return the recorded graph: one node
    per autograd node (kind ``"reverse"``: each is a step of the backward pass), the loss as
    the ``"output"`` it starts from, and one ``"param"`` node per parameter below its
    ``AccumulateGrad`` node, with the gradient ``backward()`` left in ``.grad``.

    Raises ``ValueError`` when the loss is not a scalar with a ``grad_fn``."""
    for p in params.values():
        p.grad = None
    recorder = _Recorder()
    with recorder:
        loss = forward()
    if not (isinstance(loss, torch.Tensor) and loss.grad_fn is not None and loss.numel() == 1):
        raise ValueError("forward() must return a scalar loss computed from tensors that "
                         "require gradients")
    loss.backward()
    name_of = {id(p): n for n, p in params.items()}
    g = Graph(title)
    top = g.add(Node("loss", "loss", "output", _value(loss.detach())))
    ids: dict[Any, str] = {}

    def visit(fn: Any) -> str:
        if fn in ids:
            return ids[fn]
        node_id = f"n{len(ids)}"
        ids[fn] = node_id
        made = recorder.made.get(fn)
        label = type(fn).__name__
        if label == "AccumulateGrad":
            var = fn.variable
            label = f"AccumulateGrad ({name_of.get(id(var), 'leaf')})"
            g.add(Node(node_id, label, "reverse", _value(var.grad)))
            pid = f"p{node_id}"
            g.add(Node(pid, name_of.get(id(var), "leaf"), "param", _value(var.detach())))
            g.edges.append((node_id, pid, f"grad {_shape(var)}"))
            return node_id
        g.add(Node(node_id, label, "reverse", _value(made)))
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue  # an input that needs no gradient (x, y)
            child = visit(nxt)
            src = recorder.made.get(nxt)
            shape = _shape(src) if src is not None else (
                _shape(nxt.variable) if type(nxt).__name__ == "AccumulateGrad" else "")
            g.edges.append((node_id, child, shape))
        return node_id

    root = visit(loss.grad_fn)
    g.edges.insert(0, (top.id, root, _shape(loss)))
    return g


def neuron_autograd_graph() -> Graph:
    """The chapter's neuron in PyTorch at x=1.1, w=2.2, b=0, y=1: z = x·w + b, a = σ(z),
    L = BCE(a, y); nodes BinaryCrossEntropyBackward0, SigmoidBackward0, AddBackward0,
    MulBackward0 and AccumulateGrad for w and b."""
    import torch.nn.functional as F

    from jaxbasics.chapter.neuron import CHAPTER_EXAMPLE as ex

    w = torch.tensor([ex.w], requires_grad=True)
    b = torch.tensor([ex.b], requires_grad=True)
    x, y = torch.tensor([ex.x]), torch.tensor([ex.y])
    return autograd_graph(lambda: F.binary_cross_entropy(torch.sigmoid(x * w + b), y),
                          {"w": w, "b": b})


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

    Returns ``{"png", "svg", "dot", "mermaid", "size_px", "nodes": {"torch", "jax_forward",
    "jax_grad"}, "drawn_nodes": {...}}``: node counts before and after collapsing."""
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
    counts = dict(zip(keys, (g.count() for g in full), strict=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subtitle = (f"nodes: PyTorch {counts['torch']} (the tape, recorded while the forward pass "
                f"ran); JAX {counts['jax_forward']} forward, {counts['jax_grad']} gradient "
                f"(programs traced and transformed before anything ran)"
                + ("; chains of JAX operations drawn as one node" if collapse else ""))
    files = jgraph.draw(drawn, out / model, subtitle=subtitle)
    dot, mermaid = out / f"{model}.dot", out / f"{model}.mmd"
    dot.write_text(jgraph.to_dot(full))
    mermaid.write_text(jgraph.to_mermaid(full))
    return {**files, "dot": str(dot), "mermaid": str(mermaid), "nodes": counts,
            "drawn_nodes": dict(zip(keys, (g.count() for g in drawn), strict=True))}
