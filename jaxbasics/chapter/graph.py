"""Computational graphs as data, from JAX's jaxprs (the PyTorch side, the graph recorded
during the forward pass that ``loss.backward()`` walks, is :mod:`jaxbasics.compare.torch_graph`),
drawn with matplotlib and written as Graphviz DOT or Mermaid text.

A :class:`Graph` has nodes of six kinds (:data:`KINDS`): ``"input"`` (data, e.g. x and y),
``"param"`` (what is differentiated, e.g. w and b), ``"op"`` (an operation of the forward
pass), ``"residual"`` (an operation of a gradient program computed on the way forward whose
value the reverse sweep reads), ``"reverse"`` (a step of the reverse sweep, or of PyTorch's
backward pass) and ``"output"`` (the loss, or a gradient), and edges labelled with the shape
and dtype of what flows along them.

JAX's graphs are programs: :func:`jaxpr_graph` turns the jaxpr of a function into a graph,
one node per equation, named as the chapter would name it (``matmul``, ``ReLU mask [h > 0]``,
``broadcast fc1.bias``; :func:`op_label`), with the value each equation computes when it is a
scalar (the chapter's z = 2.42, a = 0.9183, ...), and keeps the jaxpr as text with the
chapter's names for its inputs and a comment on each unfamiliar line (``Graph.listing``). For
the gradient, :func:`vjp_graph` traces the function *and* its vector-Jacobian product with the
output's cotangent as an input: the equations that depend on that cotangent are the reverse
sweep that JAX derived by transforming the forward program, before anything ran; the rest
recompute the forward values the sweep needs, and those it reads are its residuals.
:func:`program_size` counts a program's equations and nodes, the one count that
``jaxbasics graph`` and ``jaxbasics tour`` both print.
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

KINDS = ("input", "param", "op", "residual", "reverse", "output")

#: what each kind is, as the pictures' legend says it
KIND_NAMES = {
    "param": "parameter",
    "input": "data (and dL/dL = 1, the seed of the reverse sweep)",
    "op": "forward operation",
    "residual": "residual: computed on the way forward, kept for the reverse sweep",
    "reverse": "reverse sweep: passes a gradient on (PyTorch: a backward node)",
    "output": "loss / gradient",
}


@dataclass
class Node:
    """One node: ``id`` (unique in its graph), ``label`` (the operation or variable name),
    ``kind`` (one of :data:`KINDS`), ``value`` (text of its value where known and scalar) and
    ``detail`` (lines drawn under the label instead of ``= value``, e.g. the gradient a
    PyTorch backward node passes on and, labelled, the forward value it recorded)."""
    id: str
    label: str
    kind: str
    value: str | None = None
    detail: str | None = None


@dataclass
class Graph:
    """A directed graph; ``edges`` are ``(source id, target id, label)`` in the direction
    the data (or, on the PyTorch tape, the gradient) flows. ``listing``: for a graph made from
    a jaxpr, that jaxpr as text (:func:`jaxpr_listing`)."""
    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    listing: str = ""

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


OPERATION_KINDS = ("op", "residual", "reverse")


def program_size(graph: Graph) -> dict[str, int]:
    """``{"equations", "reverse", "nodes"}``: the operations of ``graph`` (for a jaxpr, its
    equations that reach an output, a ``custom_jvp_call`` counted once), those of its reverse
    sweep, and all its nodes (operations, inputs and outputs). ``jaxbasics graph`` and
    ``jaxbasics tour`` both count with this."""
    return {"equations": graph.count(*OPERATION_KINDS), "reverse": graph.count("reverse"),
            "nodes": graph.count()}


def _short(aval: Any) -> str:
    return aval.str_short(short_dtypes=True) if hasattr(aval, "str_short") else str(aval)


def _value_text(value: Any) -> str | None:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        return None
    return f"{float(arr.reshape(())):.4g}"


def _literal(v: Any) -> str | None:
    """The text of a scalar literal operand (``1``, ``-100``, ``1e-12``), else None."""
    if isinstance(v, jcore.Literal) and np.asarray(v.val).size == 1:
        return f"{float(np.asarray(v.val)):g}"
    return None


def _called(eqn: Any) -> str | None:
    """The name of the function a call equation (``custom_jvp_call``, ``pjit``) calls."""
    inner = eqn.params.get("call_jaxpr") or eqn.params.get("jaxpr")
    info = getattr(getattr(inner, "jaxpr", inner), "debug_info", None)
    called = eqn.params.get("name") if isinstance(eqn.params.get("name"), str) \
        else getattr(info, "func_name", None)
    return called.strip("_").removesuffix("_elementwise") if called else None


_SYMBOL = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}
_WORD = {"dot_general": "matmul", "logistic": "sigmoid σ", "reduce_sum": "sum",
         "transpose": "transpose ᵀ", "convert_element_type": "cast", "log1p": "log(1 + ·)",
         "neg": "negate"}
_CALLED = {"bce": "BCE", "relu": "ReLU"}


def op_label(eqn: Any, names: dict[Any, str] | None = None) -> str:
    """The chapter's name for one jaxpr equation: arithmetic as symbols with its literal
    operands (``1 − ·``, ``· ÷ 8``, ``max(·, -100)``), ``matmul`` for ``dot_general``,
    ``ReLU mask [h > 0]`` for ``gt · 0`` and ``× ReLU mask (select_n)`` for the select that
    applies it, ``broadcast fc1.bias`` for a broadcast of a named input (``names``: variable
    -> name), ``zeros`` for a broadcast constant 0, and a called function by its name
    (``BCE (custom_jvp_call)``)."""
    name = eqn.primitive.name
    lits = [_literal(v) for v in eqn.invars]
    called = _called(eqn)
    if called:
        return f"{_CALLED.get(called, called)} ({name})"
    if name in _SYMBOL and len(lits) == 2:
        a, b = (lit if lit is not None else "·" for lit in lits)
        return _SYMBOL[name] if (a, b) == ("·", "·") else f"{a} {_SYMBOL[name]} {b}"
    if name == "max" and any(lits):
        return f"max(·, {next(lit for lit in lits if lit is not None)})"
    if name == "gt" and lits[1:] == ["0"]:
        return "ReLU mask [h > 0]"
    if name == "select_n":
        return "× ReLU mask (select_n)"
    if name == "reshape" and names and eqn.invars[0] in names:
        return f"reshape {names[eqn.invars[0]]}"
    if name == "broadcast_in_dim":
        src = eqn.invars[0]
        if lits[0] is not None:
            return "zeros" if lits[0] == "0" else f"fill {lits[0]}"
        return f"broadcast {names[src]}" if names and src in names else "broadcast"
    word = _WORD.get(name, name)
    extra = [lit for lit in lits if lit is not None]
    return f"{word} {', '.join(extra)}" if extra else word


#: comments for unfamiliar lines of a listing, by op_label's result or primitive name
_EXPLAIN = {
    "custom_jvp_call": "calls a function that carries its own derivative rule (jax.custom_jvp)",
    "BCE (custom_jvp_call)": "BCE as PyTorch computes it, with PyTorch's derivative "
                             "(p - y) / max(p(1 - p), 1e-12); its body:",
    "ReLU (custom_jvp_call)": "ReLU, max(h, 0), with its derivative [h > 0]; its body:",
    "max(·, -100)": "PyTorch's BCE clamps each log at -100 (log 0 gives 100, not inf)",
    "max(·, 1e-12)": "PyTorch's BCE backward divides by max(p(1 - p), 1e-12)",
    "log1p": "log(1 + v) accurate for small v: here log(1 - p)",
    "logistic": "the sigmoid σ",
    "convert_element_type": "a dtype change (float32 stays float32): no arithmetic",
    "reduce_sum": "sum over the batch",
    "dot_general": "matrix product",
    "gt": "ReLU's mask [h > 0]",
    "select_n": "ReLU's derivative: the gradient where the mask holds, 0 elsewhere",
    "broadcast_in_dim": "broadcast (a bias over the batch, or a constant)",
    "transpose": "ᵀ",
}


def _explain(eqn: Any) -> str:
    label = op_label(eqn)
    if eqn.primitive.name == "div" and _literal(eqn.invars[1]) is not None:
        return (f"÷ {_literal(eqn.invars[1])}, the number of elements: the mean (in a reverse "
                "sweep, its derivative)")
    return _EXPLAIN.get(label) or _EXPLAIN.get(eqn.primitive.name, "")


def jaxpr_listing(jaxpr: Any, in_names: Sequence[str], out_names: Sequence[str], *,
                  keep: Sequence[Any] | None = None) -> str:
    """A jaxpr as text, like ``print(jaxpr)``, but with its inputs and outputs named as the
    chapter names them (``w b x y`` ... ``L``), the other values ``t1, t2, ...`` (so that no
    temporary takes the name of a weight), the body of a function with its own derivative
    rule printed below its call, and a ``#`` comment on each unfamiliar line. ``keep``: the
    top-level equations to list (default all)."""
    names: dict[Any, str] = {}
    counter = [0]

    def name(v: Any) -> str:
        if isinstance(v, jcore.Literal):
            return f"{np.asarray(v.val).item():g}"
        if isinstance(v, jcore.DropVar):
            return "_"
        if v not in names:
            counter[0] += 1
            names[v] = f"t{counter[0]}"
        return names[v]

    def typed(v: Any) -> str:
        return f"{name(v)}:{_short(v.aval)}"

    lines: list[str] = []

    def body(jx: Any, ins: Sequence[str] | None, outs: Sequence[str] | None, indent: str,
             eqns: Sequence[Any]) -> None:
        if ins is not None:
            names.update(zip(jx.invars, ins, strict=True))
        if outs is not None:
            names.update((v, n) for v, n in zip(jx.outvars, outs, strict=True)
                         if isinstance(v, jcore.Var) and v not in names)
        lines.append(f"{indent}{{ lambda ; {' '.join(typed(v) for v in jx.invars)}. let")
        for eqn in eqns:
            outs_text = " ".join(typed(v) for v in eqn.outvars)
            called = _called(eqn)
            prim = f"{eqn.primitive.name}[{called}]" if called else eqn.primitive.name
            call = f"{outs_text} = {prim} {' '.join(name(v) for v in eqn.invars)}"
            comment = _explain(eqn)
            lines.append((f"{indent}    {call:<34}" + (f"  # {comment}" if comment else "")).rstrip())
            inner = eqn.params.get("call_jaxpr")
            if inner is not None:
                inner = getattr(inner, "jaxpr", inner)
                body(inner, None, None, indent + "        ", inner.eqns)
        lines.append(f"{indent}  in ({', '.join(name(v) for v in jx.outvars)}) }}")

    body(jaxpr, in_names, out_names, "", jaxpr.eqns if keep is None else keep)
    return "\n".join(lines)


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
        ``"reverse"``; the other equations that feed one of them are ``"residual"``); None:
        every equation is ``"op"``.

    Equations whose results reach no output (dead code the tracer left) are neither drawn nor
    listed nor counted; each node is labelled by :func:`op_label`; ``listing`` is
    :func:`jaxpr_listing` of the equations drawn.
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

    g = Graph(title, listing=jaxpr_listing(jaxpr, in_names, out_names, keep=kept))
    var_names = dict(zip(jaxpr.invars, in_names, strict=True))
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
        node = g.add(Node(f"op{j}", op_label(eqn, var_names), "reverse" if reverse else "op",
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
    kind_of = {n.id: n.kind for n in g.nodes}
    read_by_sweep = {s for s, t, _ in g.edges if kind_of[t] == "reverse"}
    for n in g.nodes:
        if n.kind == "op" and n.id in read_by_sweep:
            n.kind = "residual"
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
        if (n.kind in OPERATION_KINDS and prev is not None and kind[prev] == n.kind
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
    """The text drawn in a node: its label, then its ``detail`` lines, or else its value
    (``= 2.42``) on a second line where known."""
    if n.detail:
        return f"{n.label}\n{n.detail}"
    return n.label if n.value is None else f"{n.label}\n= {n.value}"


def to_dot(graphs: Sequence[Graph]) -> str:
    """Graphviz DOT text: one cluster per graph; leaves are ellipses, operations boxes (the
    reverse sweep's red, residuals purple), outputs double octagons; edges carry their
    labels."""
    shape = {"input": "ellipse", "param": "ellipse", "op": "box", "residual": "box",
             "reverse": "box", "output": "doubleoctagon"}
    color = {"input": "gray", "param": "orange", "op": "steelblue", "residual": "purple",
             "reverse": "firebrick", "output": "darkgreen"}
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
              "  classDef op fill:#d0e4f5", "  classDef residual fill:#e1d5f0",
              "  classDef reverse fill:#f5c2c2",
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


#: font sizes (points) of node text, edge labels and titles; the PNG's pixels per inch. A
#: figure at most 10 inches wide shown 900 px wide (GitHub's width) keeps 7.5 pt text at
#: about 9 px.
FONT_PT, EDGE_PT, TITLE_PT, DPI = 7.5, 6.0, 9.0, 200
_CHAR_IN, _LINE_IN, _GAP_IN, _LAYER_GAP_IN, _CUT = 0.056, 0.135, 0.14, 0.34, 48


def _box_text(n: Node) -> str:
    return "\n".join(line if len(line) <= _CUT else line[:_CUT - 1] + "…"
                      for line in node_text(n).split("\n"))


def _box_size(n: Node) -> tuple[float, float]:
    lines = _box_text(n).split("\n")
    return 0.2 + _CHAR_IN * max(len(line) for line in lines), 0.1 + _LINE_IN * len(lines)


@dataclass
class _Layout:
    pos: dict[str, tuple[float, float]]  # node centre (x, y), inches from the panel's top left
    size: dict[str, tuple[float, float]]
    width: float
    height: float


def layout(graph: Graph, min_width: float = 0.0) -> _Layout:
    """Place ``graph``'s nodes top to bottom by :func:`layers`: the first layer spread over
    the panel (at least ``min_width`` inches wide), each later node under the mean position
    of the nodes that feed it, pushed aside as little as needed to keep the boxes apart."""
    depth = layers(graph)
    size = {n.id: _box_size(n) for n in graph.nodes}
    rows: dict[int, list[str]] = {}
    for n in graph.nodes:
        rows.setdefault(depth[n.id], []).append(n.id)
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for s, t, _ in graph.edges:
        preds[t].append(s)
    width = max(2.2, min_width, 0.3 + 0.078 * len(graph.title),
                max(sum(size[i][0] for i in ids) + _GAP_IN * (len(ids) + 1)
                    for ids in rows.values()))
    x: dict[str, float] = {}

    def place(ids: list[str], want: dict[str, float]) -> None:
        ids.sort(key=lambda i: want[i])
        for k, i in enumerate(ids):  # left to right: no overlap, nothing past the left edge
            low = _GAP_IN + size[i][0] / 2 if k == 0 else (
                x[ids[k - 1]] + (size[ids[k - 1]][0] + size[i][0]) / 2 + _GAP_IN)
            x[i] = max(want[i], low)
        for k in range(len(ids) - 1, -1, -1):  # right to left: nothing past the right edge
            i = ids[k]
            high = width - _GAP_IN - size[i][0] / 2 if k == len(ids) - 1 else (
                x[ids[k + 1]] - (size[ids[k + 1]][0] + size[i][0]) / 2 - _GAP_IN)
            x[i] = min(x[i], high)

    for d in sorted(rows):
        ids = rows[d]
        spread = {i: (k + 0.5) * width / len(ids) for k, i in enumerate(ids)}
        place(ids, {i: sum(x[p] for p in preds[i]) / len(preds[i]) if preds[i] else spread[i]
                    for i in ids})
    pos, top = {}, 0.45  # room for the title
    for d in sorted(rows):
        height = max(size[i][1] for i in rows[d])
        for i in rows[d]:
            pos[i] = (x[i], top + height / 2)
        top += height + _LAYER_GAP_IN
    return _Layout(pos, size, width, top - _LAYER_GAP_IN + 0.15)


#: the narrowest figure (inches), so that legend and subtitle fit
MIN_WIDTH_IN = 8.0


def figure_size(graphs: Sequence[Graph], rows: Sequence[Sequence[int]] | None = None,
                subtitle: str = "") -> tuple[float, float]:
    """The (width, height) in inches that :func:`draw` gives ``graphs`` arranged in ``rows``,
    legend and subtitle included."""
    return _arrange(_layouts(graphs, rows), rows, len(graphs), subtitle)[1]


def _layouts(graphs: Sequence[Graph], rows: Sequence[Sequence[int]] | None) -> list[_Layout]:
    alone = {r[0] for r in rows or [] if len(r) == 1}  # a panel alone in its row: full width
    return [layout(g, MIN_WIDTH_IN if k in alone else 0.0) for k, g in enumerate(graphs)]


def _subtitle_lines(subtitle: str, width: float) -> list[str]:
    import textwrap

    return textwrap.wrap(subtitle, int(width / 0.052)) if subtitle else []


def _arrange(layouts: Sequence[_Layout], rows: Sequence[Sequence[int]] | None, n: int,
             subtitle: str) -> tuple[dict[int, tuple[float, float]], tuple[float, float]]:
    rows = [list(range(n))] if rows is None else rows
    if sorted(i for r in rows for i in r) != list(range(n)):
        raise ValueError(f"rows must place each of the {n} graphs once, got {rows}")
    width = max(MIN_WIDTH_IN, *(sum(layouts[i].width for i in r) for r in rows))
    offset, top = {}, 0.0
    for r in rows:
        left = (width - sum(layouts[i].width for i in r)) / 2  # each row centred
        for i in r:
            offset[i] = (left, top)
            left += layouts[i].width
        top += max(layouts[i].height for i in r)
    bottom = 0.75 + 0.12 * len(_subtitle_lines(subtitle, width))  # legend, subtitle
    return offset, (round(width, 2), round(top + bottom, 2))


def draw(graphs: Sequence[Graph], path: str | Path, *, subtitle: str = "",
         rows: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """Draw ``graphs`` (layered top to bottom, edges labelled with the shapes of arrays, those
    of scalars left unlabelled) into ``path``'s PNG
    and SVG (``path`` without suffix, or with either), in ``rows`` of panels (lists of indices
    into ``graphs``; default: all side by side), with a legend naming each kind of node drawn
    and ``subtitle`` under it. Returns ``{"png", "svg", "size_px"}``: the files and the PNG's
    (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    face = {"input": "#eeeeee", "param": "#ffd8a8", "op": "#d0e4f5", "residual": "#e1d5f0",
            "reverse": "#f5c2c2", "output": "#c8e6c9"}
    layouts = _layouts(graphs, rows)
    offset, size = _arrange(layouts, rows, len(graphs), subtitle)
    fig = plt.figure(figsize=size, dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, size[0])
    ax.set_ylim(-size[1], 0)
    ax.axis("off")
    for k, (g, lay) in enumerate(zip(graphs, layouts, strict=True)):
        ox, oy = offset[k]
        ax.text(ox + lay.width / 2, -(oy + 0.2), g.title, fontsize=TITLE_PT, ha="center",
                va="center", weight="bold")

        def at(node_id: str, lay: _Layout = lay, ox: float = ox, oy: float = oy
               ) -> tuple[float, float]:
            px, py = lay.pos[node_id]
            return ox + px, -(oy + py)

        for s, t, label in g.edges:
            (x0, y0), (x1, y1) = at(s), at(t)
            y0 -= lay.size[s][1] / 2
            y1 += lay.size[t][1] / 2
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops={"arrowstyle": "-|>", "color": "#666666", "lw": 0.6,
                                    "shrinkA": 0, "shrinkB": 0})
            if label and not label.endswith(("[]", "[1]")):  # scalars' edges need no shape
                ax.text(x0 + (x1 - x0) * 0.55, y0 + (y1 - y0) * 0.55, label, fontsize=EDGE_PT,
                        color="#555555", ha="center", va="center",
                        bbox={"fc": "white", "ec": "none", "pad": 0.2, "alpha": 0.85})
        for n in g.nodes:
            (x, y), (w, h) = at(n.id), lay.size[n.id]
            box = "round,pad=0.02" if n.kind in ("input", "param", "output") else "square,pad=0.02"
            ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=box,
                                        fc=face[n.kind], ec="#333333", lw=0.5))
            ax.text(x, y, _box_text(n), fontsize=FONT_PT, ha="center", va="center")
    drawn = [k for k in KINDS if any(g.count(k) for g in graphs)]
    lines = _subtitle_lines(subtitle, size[0])
    fig.legend(handles=[Patch(fc=face[k], ec="#333333", lw=0.5, label=KIND_NAMES[k])
                        for k in drawn], loc="lower center",
               bbox_to_anchor=(0.5, (0.1 + 0.12 * len(lines)) / size[1]), ncol=2,
               fontsize=FONT_PT, frameon=False, handlelength=1.5, columnspacing=1.5)
    if lines:
        fig.text(0.5, 0.06 / size[1], "\n".join(lines), ha="center", va="bottom",
                 fontsize=EDGE_PT + 0.5, linespacing=1.3)
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
            vjp_graph(neuron.loss, params, data, title="JAX: jaxpr of its gradient", **kw))


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
            vjp_graph(loss, leaves, [x, y], title="JAX: jaxpr of its gradient", **kw))
