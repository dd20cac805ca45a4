"""Computational graphs as data, from JAX's jaxprs (the PyTorch side, the tape that
``loss.backward()`` walks, is :mod:`jaxbasics.compare.torch_graph`), drawn with matplotlib
and written as Graphviz DOT or Mermaid text.

A :class:`Graph` has nodes of five kinds: ``"input"`` (data, e.g. x and y), ``"param"``
(what is differentiated, e.g. w and b), ``"op"`` (an operation of the forward pass),
``"reverse"`` (an operation of the backward pass) and ``"output"`` (the loss, or a gradient),
and edges labelled with the shape and dtype of what flows along them.

JAX's graphs are programs: :func:`jaxpr_graph` turns the jaxpr of a function into a graph,
one node per equation, with the value each equation computes when it is a scalar (the
chapter's z = 2.42, a = 0.9183, ...). For the gradient, :func:`vjp_graph` traces the
function *and* its vector-Jacobian product with the output's cotangent as an input: the
equations that depend on that cotangent are the reverse sweep that JAX derived by
transforming the forward program, before anything ran; the rest recompute the forward values
the sweep needs (residuals).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

KINDS = ("input", "param", "op", "reverse", "output")


@dataclass
class Node:
    """One node: ``id`` (unique in its graph), ``label`` (the operation or variable name),
    ``kind`` (one of :data:`KINDS`), ``value`` (text of its value where known and scalar)."""
    id: str
    label: str
    kind: str
    value: str | None = None


@dataclass
class Graph:
    """A directed graph; ``edges`` are ``(source id, target id, label)`` in the direction
    the data (or, on the PyTorch tape, the gradient) flows."""
    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        if node.kind not in KINDS:
            raise ValueError(f"node kind must be one of {KINDS}, got {node.kind!r}")
        self.nodes.append(node)
        return node

    def count(self, *kinds: str) -> int:
        """Number of nodes of the given kinds (all nodes without kinds)."""
        return sum(1 for n in self.nodes if not kinds or n.kind in kinds)

    def labels(self, *kinds: str) -> list[str]:
        """The labels of the nodes of the given kinds, in order."""
        return [n.label for n in self.nodes if not kinds or n.kind in kinds]


def _short(aval: Any) -> str:
    return aval.str_short(short_dtypes=True) if hasattr(aval, "str_short") else str(aval)


def _value_text(value: Any) -> str | None:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        return None
    return f"{float(arr.reshape(())):.4g}"


def _op_label(eqn: Any) -> str:
    name = eqn.primitive.name
    inner = eqn.params.get("call_jaxpr") or eqn.params.get("jaxpr")  # custom_jvp_call, pjit
    info = getattr(getattr(inner, "jaxpr", inner), "debug_info", None)
    called = eqn.params.get("name") if isinstance(eqn.params.get("name"), str) \
        else getattr(info, "func_name", None)
    if called:
        name = f"{called.strip('_').removesuffix('_elementwise')} ({name})"
    literals = [f"{float(np.asarray(v.val)):g}" for v in eqn.invars
                if isinstance(v, jcore.Literal) and np.asarray(v.val).size == 1]
    return f"{name} {', '.join(literals)}" if literals else name


def jaxpr_graph(closed: jcore.ClosedJaxpr, args: Sequence[Any], *,
                in_names: Sequence[str], in_kinds: Sequence[str], out_names: Sequence[str],
                title: str, reverse_from: int | None = None) -> Graph:
    """The graph of ``closed`` (e.g. ``jax.make_jaxpr(f)(*args)``), evaluated at ``args``.

    Args:
      closed: the jaxpr; its flat inputs are named ``in_names`` with kinds ``in_kinds``
        (``"input"`` or ``"param"``; ``"cotangent"`` for the seed of a reverse sweep) and its
        outputs ``out_names``.
      args: the flat input values, so that each scalar an equation computes is written on
        its node.
      title: the graph's title.
      reverse_from: index of the input whose dependants are the reverse sweep (their kind is
        ``"reverse"``); None: every equation is ``"op"``.

    Equations whose results reach no output (dead code the tracer left) are not drawn;
    literal operands are written into the operation's label.
    """
    jaxpr = closed.jaxpr
    if not (len(in_names) == len(in_kinds) == len(jaxpr.invars) == len(args)):
        raise ValueError(f"in_names, in_kinds and args must name each of the jaxpr's "
                         f"{len(jaxpr.invars)} inputs, got {len(in_names)}, {len(in_kinds)} "
                         f"and {len(args)}")
    if len(out_names) != len(jaxpr.outvars):
        raise ValueError(f"out_names must name each of the jaxpr's {len(jaxpr.outvars)} "
                         f"outputs, got {len(out_names)}")
    # keep the equations that reach an output
    needed = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars if not isinstance(v, jcore.DropVar)):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    kept.reverse()
    # every intermediate value, by evaluating the jaxpr with them as outputs
    inner = [v for e in kept for v in e.outvars if not isinstance(v, jcore.DropVar)]
    values = jcore.jaxpr_as_fun(jcore.ClosedJaxpr(
        jaxpr.replace(outvars=inner), closed.consts))(*args) if inner else []
    value_of = dict(zip(inner, values, strict=True))

    g = Graph(title)
    producer: dict[Any, str] = {}
    seeds: set[Any] = set()
    for i, (var, name, kind) in enumerate(zip(jaxpr.invars, in_names, in_kinds, strict=True)):
        if var not in needed and var not in jaxpr.outvars:
            continue  # an input nothing uses (e.g. y in a gradient that does not need it)
        node = g.add(Node(f"in{i}", name, "input" if kind == "cotangent" else kind,
                          _value_text(args[i])))
        producer[var] = node.id
        if i == reverse_from:
            seeds.add(var)
    for j, eqn in enumerate(kept):
        reverse = any(v in seeds for v in eqn.invars if isinstance(v, jcore.Var))
        outs = [v for v in eqn.outvars if not isinstance(v, jcore.DropVar)]
        if reverse:
            seeds.update(outs)
        node = g.add(Node(f"op{j}", _op_label(eqn), "reverse" if reverse else "op",
                          _value_text(value_of[outs[0]]) if len(outs) == 1 else None))
        for v in eqn.invars:
            if isinstance(v, jcore.Var) and v in producer:
                g.edges.append((producer[v], node.id, _short(v.aval)))
        for v in outs:
            producer[v] = node.id
    for k, (var, name) in enumerate(zip(jaxpr.outvars, out_names, strict=True)):
        value = value_of.get(var) if isinstance(var, jcore.Var) else None
        node = g.add(Node(f"out{k}", name, "output",
                          None if value is None else _value_text(value)))
        if isinstance(var, jcore.Var) and var in producer:
            g.edges.append((producer[var], node.id, _short(var.aval)))
    return g


def vjp_graph(loss: Callable[..., jax.Array], params: Sequence[Any], data: Sequence[Any], *,
              param_names: Sequence[str], data_names: Sequence[str], title: str) -> Graph:
    """The graph JAX derives for the gradient of ``loss(*params, *data)`` (a scalar) with
    respect to ``params``: the jaxpr of ``vjp(loss)(1.0)`` with the cotangent 1.0 as an
    input named ``dL/dL``, whose dependants are marked ``"reverse"``; its outputs are named
    ``dL/d<name>``. Each param and data entry is one array."""
    def grads(*flat):
        p, d, ct = flat[:len(params)], flat[len(params):-1], flat[-1]
        _, pullback = jax.vjp(lambda *q: loss(*q, *d), *p)
        return pullback(ct)

    args = [*params, *data, jnp.ones((), jnp.float32)]
    closed = jax.make_jaxpr(grads)(*args)
    return jaxpr_graph(closed, args, in_names=[*param_names, *data_names, "dL/dL"],
                       in_kinds=["param"] * len(params) + ["input"] * len(data) + ["cotangent"],
                       out_names=[f"dL/d{n}" for n in param_names], title=title,
                       reverse_from=len(args) - 1)


def forward_graph(loss: Callable[..., jax.Array], params: Sequence[Any], data: Sequence[Any],
                  *, param_names: Sequence[str], data_names: Sequence[str], title: str) -> Graph:
    """The graph of the forward program ``loss(*params, *data)`` (its jaxpr), output ``L``."""
    args = [*params, *data]
    return jaxpr_graph(jax.make_jaxpr(loss)(*args), args,
                       in_names=[*param_names, *data_names],
                       in_kinds=["param"] * len(params) + ["input"] * len(data),
                       out_names=["L"], title=title)


def collapse_chains(graph: Graph) -> Graph:
    """A copy of ``graph`` with each chain of operations (a node whose only input comes from
    the previous node, which feeds nothing else, of the same kind) drawn as one node listing
    them: the shape a reader needs of a large graph. Inputs, parameters and outputs stay."""
    ins: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    outs: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for s, t, _ in graph.edges:
        outs[s].append(t)
        ins[t].append(s)
    kind = {n.id: n.kind for n in graph.nodes}
    head: dict[str, str] = {}  # node -> the first node of its chain
    for n in graph.nodes:
        prev = ins[n.id][0] if len(set(ins[n.id])) == 1 else None
        if (n.kind in ("op", "reverse") and prev is not None and kind[prev] == n.kind
                and len(set(outs[prev])) == 1):
            head[n.id] = head.get(prev, prev)
    merged = Graph(graph.title)
    members: dict[str, list[Node]] = {}
    for n in graph.nodes:
        members.setdefault(head.get(n.id, n.id), []).append(n)
    for n in graph.nodes:
        if n.id in head:
            continue
        chain = members[n.id]
        label = " → ".join(m.label for m in chain) if len(chain) > 1 else n.label
        merged.add(Node(n.id, label, n.kind, chain[-1].value))
    seen = set()
    for s, t, label in graph.edges:
        s2, t2 = head.get(s, s), head.get(t, t)
        if s2 != t2 and (s2, t2, label) not in seen:
            seen.add((s2, t2, label))
            merged.edges.append((s2, t2, label))
    return merged


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def node_text(n: Node) -> str:
    """The text drawn in a node: its label, and its value on a second line where known."""
    return n.label if n.value is None else f"{n.label}\n= {n.value}"


def to_dot(graphs: Sequence[Graph]) -> str:
    """Graphviz DOT text: one cluster per graph; leaves are ellipses, operations boxes (the
    reverse sweep's red), outputs double octagons; edges carry their labels."""
    shape = {"input": "ellipse", "param": "ellipse", "op": "box", "reverse": "box",
             "output": "doubleoctagon"}
    color = {"input": "gray", "param": "orange", "op": "steelblue", "reverse": "firebrick",
             "output": "darkgreen"}
    lines = ["digraph computational_graphs {", "  rankdir=TB;"]
    for k, g in enumerate(graphs):
        lines.append(f'  subgraph cluster_{k} {{')
        lines.append(f'    label="{_quote(g.title)}";')
        for n in g.nodes:
            lines.append(f'    g{k}_{n.id} [label="{_quote(node_text(n))}", '
                         f'shape={shape[n.kind]}, color={color[n.kind]}, kind={n.kind}];')
        for s, t, label in g.edges:
            lines.append(f'    g{k}_{s} -> g{k}_{t} [label="{_quote(label)}"];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graphs: Sequence[Graph]) -> str:
    """Mermaid flowchart text: one subgraph per graph, node classes by kind."""
    def esc(text: str) -> str:
        return text.replace('"', "#quot;").replace("\n", "<br/>")

    lines = ["flowchart TB"]
    for k, g in enumerate(graphs):
        lines.append(f'  subgraph G{k}["{esc(g.title)}"]')
        for n in g.nodes:
            lines.append(f'    g{k}_{n.id}["{esc(node_text(n))}"]:::{n.kind}')
        for s, t, label in g.edges:
            lines.append(f'    g{k}_{s} -->|"{esc(label)}"| g{k}_{t}')
        lines.append("  end")
    lines += ["  classDef input fill:#eeeeee", "  classDef param fill:#ffd8a8",
              "  classDef op fill:#d0e4f5", "  classDef reverse fill:#f5c2c2",
              "  classDef output fill:#c8e6c9"]
    return "\n".join(lines) + "\n"


def layers(graph: Graph) -> dict[str, int]:
    """Each node's layer in a top-to-bottom drawing: the length of the longest path to it
    from a node without inputs."""
    depth = {n.id: 0 for n in graph.nodes}
    order = [n.id for n in graph.nodes]
    for _ in range(len(order)):  # relax: node lists are topologically ordered or nearly so
        changed = False
        for s, t, _ in graph.edges:
            if depth[t] < depth[s] + 1:
                depth[t] = depth[s] + 1
                changed = True
        if not changed:
            break
    return depth


#: inches per layer and per node in a row, and the drawing's resolution
LAYER_IN, SLOT_IN, DPI = 0.75, 1.55, 100


def _slot(graph: Graph) -> float:
    """Inches per node in a row: room for the longest label (cut at 44 characters)."""
    longest = max((min(44, len(line)) for n in graph.nodes for line in node_text(n).split("\n")),
                  default=1)
    return max(SLOT_IN, 0.25 + 0.058 * longest)


def _panel_width(graph: Graph, depth: dict[str, int]) -> float:
    rows: dict[int, int] = {}
    for d in depth.values():
        rows[d] = rows.get(d, 0) + 1
    return max(3.2, _slot(graph) * max(rows.values(), default=1))


def figure_size(graphs: Sequence[Graph]) -> tuple[float, float]:
    """The (width, height) in inches that :func:`draw` gives ``graphs`` side by side."""
    width = height = 0.0
    for g in graphs:
        depth = layers(g)
        width += _panel_width(g, depth)
        height = max(height, 1.2 + LAYER_IN * (max(depth.values(), default=0) + 1))
    return round(width, 2), round(height, 2)


def draw(graphs: Sequence[Graph], path: str | Path, *, subtitle: str = "") -> dict[str, Any]:
    """Draw ``graphs`` side by side (layered, top to bottom, edges labelled with shapes) into
    ``path``'s PNG and SVG (``path`` without suffix, or with either). Returns
    ``{"png", "svg", "size_px"}``: the files and the PNG's (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    face = {"input": "#eeeeee", "param": "#ffd8a8", "op": "#d0e4f5", "reverse": "#f5c2c2",
            "output": "#c8e6c9"}
    size = figure_size(graphs)
    fig = plt.figure(figsize=size, dpi=DPI)
    left = 0.0
    for g in graphs:
        depth = layers(g)
        rows: dict[int, list[str]] = {}
        for n in g.nodes:
            rows.setdefault(depth[n.id], []).append(n.id)
        width, slot = _panel_width(g, depth), _slot(g)
        ax = fig.add_axes((left / size[0], 0.0, width / size[0], 1.0))
        left += width
        ax.set_xlim(0, width)
        ax.set_ylim(-(size[1] - 0.9), 0.6)
        ax.axis("off")
        ax.set_title(g.title, fontsize=9, y=1.0, pad=-14)
        pos = {}
        for d, ids in rows.items():
            for k, node_id in enumerate(ids):
                pos[node_id] = ((k + 0.5) * width / len(ids), -LAYER_IN * d - 0.2)
        for s, t, label in g.edges:
            (x0, y0), (x1, y1) = pos[s], pos[t]
            ax.annotate("", xy=(x1, y1 + 0.17), xytext=(x0, y0 - 0.17),
                        arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 0.8})
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=5.5, color="#444444",
                    ha="center", va="center", bbox={"fc": "white", "ec": "none", "pad": 0.3})
        for n in g.nodes:
            x, y = pos[n.id]
            text = node_text(n)
            if len(text) > 44:
                text = text[:42] + "…"
            w = min(slot - 0.1, 0.12 + 0.058 * max(len(line) for line in text.split("\n")))
            box = "round,pad=0.05" if n.kind in ("input", "param", "output") else "square,pad=0.05"
            ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.15), w, 0.3, boxstyle=box,
                                        fc=face[n.kind], ec="#333333", lw=0.6))
            ax.text(x, y, text, fontsize=6, ha="center", va="center")
    if subtitle:
        fig.text(0.5, 0.005, subtitle, ha="center", va="bottom", fontsize=7)
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".svg") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    fig.savefig(png, dpi=DPI)
    fig.savefig(svg)
    plt.close(fig)
    return {"png": str(png), "svg": str(svg),
            "size_px": (int(math.floor(size[0] * DPI + 0.5)), int(math.floor(size[1] * DPI + 0.5)))}


def neuron_graphs() -> tuple[Graph, Graph]:
    """The chapter's single neuron at x=1.1, w=2.2, b=0, y=1: the forward program (z = 2.42,
    a = 0.9183, L) and the program JAX derives for (dL/dw, dL/db) = (-0.0898, -0.0817)."""
    from jaxbasics.chapter import neuron

    ex = neuron.CHAPTER_EXAMPLE
    params = [jnp.float32(ex.w), jnp.float32(ex.b)]
    data = [jnp.float32(ex.x), jnp.float32(ex.y)]
    kw = {"param_names": ["w", "b"], "data_names": ["x", "y"]}
    return (forward_graph(neuron.loss, params, data, title="JAX: jaxpr of the loss", **kw),
            vjp_graph(neuron.loss, params, data, title="JAX: jaxpr of its gradient (red: "
                      "reverse sweep)", **kw))


def simplenet_graphs(seed: int = 0) -> tuple[Graph, Graph]:
    """SimpleNet (Linear(10,5) → ReLU → Linear(5,1) → Sigmoid, BCE) on
    :func:`jaxbasics.chapter.simplenet.example`'s model and batch for ``seed`` (those tour and
    compare show): the forward program and the gradient's, parameters named as in the model
    (``fc1.kernel``, ...)."""
    from jaxbasics.chapter import simplenet
    from jaxbasics.params import loss_of_params, split_params

    model, x, y = simplenet.example(seed)
    graphdef, params = split_params(model)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in flat]
    loss_fn = loss_of_params(graphdef, simplenet.bce_loss)

    def loss(*arrays):
        leaves, (xb, yb) = arrays[:len(flat)], arrays[len(flat):]
        return loss_fn(jax.tree.unflatten(treedef, list(leaves)), xb, yb)

    kw = {"param_names": names, "data_names": ["x", "y"]}
    leaves = [v for _, v in flat]
    return (forward_graph(loss, leaves, [x, y], title="JAX: jaxpr of the loss", **kw),
            vjp_graph(loss, leaves, [x, y], title="JAX: jaxpr of its gradient (red: reverse "
                      "sweep)", **kw))
