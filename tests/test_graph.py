"""The computational graphs drawn (``jaxbasics graph``): PyTorch's autograd tape and JAX's
jaxprs, as data, pictures and DOT/Mermaid text."""

import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jaxbasics.chapter import graph as jgraph
from jaxbasics.compare import torch_graph


def _values(g):
    return {n.label: n.value for n in g.nodes}


def _text(g, label):
    return next(jgraph.node_text(n) for n in g.nodes if n.label == label)


def test_pytorch_graph_shows_the_gradient_each_backward_node_passes_on():
    g = torch_graph.neuron_autograd_graph()
    assert sorted(g.labels("reverse")) == sorted([
        "BinaryCrossEntropyBackward0", "SigmoidBackward0", "AddBackward0", "MulBackward0",
        "AccumulateGrad (w)", "AccumulateGrad (b)"])
    assert g.labels("param") == ["w", "b"] and g.labels("output") == ["loss"]
    # hand math at z = 2.42: a = σ(z), dL/da = -y/a, dL/dz = a - y, dL/dw = (a - y)·x
    a = 1.0 / (1.0 + np.exp(-2.42))
    assert f"{-1.0 / a:.4g}" == "-1.089" and f"{a - 1.0:.4g}" == "-0.08166"
    assert _text(g, "BinaryCrossEntropyBackward0") == (
        "BinaryCrossEntropyBackward0\ndL/da = -1.089\nforward: L = 0.08519")
    assert _text(g, "SigmoidBackward0") == "SigmoidBackward0\ndL/dz = -0.08166\nforward: a = 0.9183"
    assert _text(g, "AddBackward0") == (
        "AddBackward0\ndL/d(x·w) = -0.08166\ndL/db = -0.08166\nforward: z = 2.42")
    assert _text(g, "MulBackward0") == "MulBackward0\ndL/dw = -0.08983\nforward: x·w = 2.42"
    assert _text(g, "AccumulateGrad (w)") == "AccumulateGrad (w)\nw.grad = -0.08983"
    v = _values(g)  # the gradients passed on, from the hooks autograd itself called
    assert (v["BinaryCrossEntropyBackward0"], v["SigmoidBackward0"]) == ("-1.089", "-0.08166")
    assert (v["AccumulateGrad (w)"], v["AccumulateGrad (b)"]) == ("-0.08983", "-0.08166")
    # walked from loss.grad_fn: loss -> BCE -> sigmoid -> add -> (mul -> w, b)
    by_id = {n.id: n.label for n in g.nodes}
    edges = {(by_id[s], by_id[t]) for s, t, _ in g.edges}
    assert {("loss", "BinaryCrossEntropyBackward0"),
            ("BinaryCrossEntropyBackward0", "SigmoidBackward0"),
            ("SigmoidBackward0", "AddBackward0"), ("AddBackward0", "MulBackward0"),
            ("MulBackward0", "AccumulateGrad (w)"), ("AddBackward0", "AccumulateGrad (b)"),
            ("AccumulateGrad (w)", "w"), ("AccumulateGrad (b)", "b")} == edges


def test_jax_graphs_are_the_chapters_program_and_its_derived_gradient():
    forward, grad = jgraph.neuron_graphs()
    assert forward.labels("op") == ["×", "+", "sigmoid σ", "BCE (custom_jvp_call)", "sum",
                                    "· ÷ 1"]
    v = _values(forward)
    assert (v["×"], v["+"], v["sigmoid σ"], v["L"]) == ("2.42", "2.42", "0.9183", "0.08519")
    g = _values(grad)
    assert (g["dL/dw"], g["dL/db"]) == ("-0.08983", "-0.08166")
    # the reverse sweep: every operation that depends on the cotangent dL/dL, and only those
    seed = next(n.id for n in grad.nodes if n.label == "dL/dL")
    downstream, frontier = set(), {seed}
    while frontier:
        downstream |= frontier
        frontier = {t for s, t, _ in grad.edges if s in frontier} - downstream
    reverse = {n.id for n in grad.nodes if n.kind == "reverse"}
    ops = {n.id for n in grad.nodes if n.kind in jgraph.OPERATION_KINDS}
    assert reverse == downstream & ops and len(reverse) == 4
    # residuals: the forward operations the sweep reads, a(1 - a) = 0.07499 and
    # dL/da = (a - y) / max(a(1 - a), 1e-12) = -1.089
    kind = {n.id: n.kind for n in grad.nodes}
    read = {s for s, t, _ in grad.edges if kind[t] == "reverse" and kind[s] in ("op", "residual")}
    assert {n.id for n in grad.nodes if n.kind == "residual"} == read
    assert sorted(n.value for n in grad.nodes if n.kind == "residual") == ["-1.089", "0.07499"]
    assert all(label == "f32[]" for _, _, label in grad.edges)  # scalars: shapes on the edges


def test_jaxpr_listing_names_the_chapters_values_and_explains_the_unfamiliar_lines():
    forward, grad = jgraph.neuron_graphs()
    lines = forward.listing.splitlines()
    assert lines[0] == "{ lambda ; w:f32[] b:f32[] x:f32[] y:f32[]. let"
    assert lines[-1] == "  in (L) }" and lines[1].strip() == "t1:f32[] = mul x w"
    assert not any(line.lstrip().startswith(("w:", "a:")) for line in lines[1:])  # no clash
    text = forward.listing
    assert "= custom_jvp_call[bce] t3 y  # BCE as PyTorch computes it" in text
    assert "max t7 -100" in text and "clamps each log at -100" in text
    assert "L:f32[] = div t17 1" in text and "the mean" in text
    assert grad.listing.splitlines()[0].endswith("y:f32[] dL/dL:f32[]. let")
    assert "  in (dL/dw, dL/db) }" in grad.listing
    # one line per counted equation (plus the custom_jvp_call's body of 10)
    counted = jgraph.program_size(forward)["equations"]
    assert sum(" = " in line for line in lines) == counted + 10


def test_simplenet_graphs_name_the_layers_and_collapse_chains():
    tg = torch_graph.simplenet_autograd_graph()
    assert {"AddmmBackward0", "ReluBackward0", "SigmoidBackward0", "TBackward0",
            "BinaryCrossEntropyBackward0"} == {lab for lab in tg.labels("reverse")
                                               if not lab.startswith("AccumulateGrad")}
    assert sorted(tg.labels("param")) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    forward, grad = jgraph.simplenet_graphs()
    assert grad.labels("output") == ["dL/dfc1.bias", "dL/dfc1.kernel", "dL/dfc2.bias",
                                     "dL/dfc2.kernel"]
    # the chapter's names, not bare primitives: ReLU's mask and its use, matmul, the biases
    ops = grad.labels(*jgraph.OPERATION_KINDS)
    assert {"ReLU mask [h > 0]", "× ReLU mask (select_n)", "matmul", "reshape fc1.bias",
            "zeros"} <= set(ops)
    assert not {"gt 0", "select_n", "dot_general", "broadcast_in_dim 0"} & set(ops)
    small = jgraph.collapse_chains(grad)
    assert small.count() < grad.count()
    for kind in ("input", "param", "output"):
        assert small.labels(kind) == grad.labels(kind)
    assert any(" → " in lab for lab in small.labels(*jgraph.OPERATION_KINDS))
    # the picture graph --model simplenet draws (panels one under another) fits 10 inches
    width, _ = jgraph.figure_size([tg, jgraph.collapse_chains(forward), small],
                                  rows=[[0], [1], [2]])
    assert width <= 10


def test_simplenet_graphs_draw_the_example_tour_and_compare_show():
    from jaxbasics.chapter import simplenet

    model, x, y = simplenet.example(0)
    expected = f"{float(simplenet.bce_loss(model, x, y)):.4g}"
    forward, _ = jgraph.simplenet_graphs()
    tg = torch_graph.simplenet_autograd_graph()
    assert _values(forward)["L"] == expected == _values(tg)["loss"]
    assert "f32[8,10]" in {lab for _, _, lab in forward.edges}  # the example's batch of 8


def _dot_reader(text):
    nodes = dict(re.findall(r'^\s+(g\d+_\w+) \[label="((?:[^"\\]|\\.)*)", shape=', text, re.M))
    edges = re.findall(r'^\s+(g\d+_\w+) -> (g\d+_\w+) \[label="((?:[^"\\]|\\.)*)"\];', text,
                       re.M)
    return nodes, edges


def _mermaid_reader(text):
    nodes = dict(re.findall(r'^\s+(g\d+_\w+)\["([^"]*)"\]:::\w+$', text, re.M))
    edges = re.findall(r'^\s+(g\d+_\w+) -->\|"([^"]*)"\| (g\d+_\w+)$', text, re.M)
    return nodes, edges


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_graph_command_writes_picture_and_text_that_read_back(tmp_path, capsys):
    from jaxbasics.cli import main

    assert main(["graph", "--out", str(tmp_path), "--json"]) == 0
    r = __import__("json").loads(capsys.readouterr().out)
    assert r["nodes"] == {"torch": 9, "jax_forward": 11, "jax_grad": 21}
    assert r["equations"] == {"torch": 6, "jax_forward": 6, "jax_grad": 14}
    # tour's section 3 counts the same programs the same way
    from jaxbasics.cli.tour import graph_section

    t = graph_section()
    assert (t["forward_equations"], t["forward_nodes"]) == (6, 11)
    assert (t["grad_equations"], t["grad_nodes"], t["grad_reverse_equations"]) == (14, 21, 4)
    # readable at GitHub's ~900 px: at most 10 inches wide, so 7.5 pt text stays ~9 px
    assert _png_size(r["png"]) == tuple(r["size_px"])
    assert r["size_px"][0] <= 10 * jgraph.DPI and jgraph.FONT_PT >= 7.5
    assert (tmp_path / "neuron.png").stat().st_size > 20_000
    svg = ET.parse(r["svg"]).getroot()
    svg_text = open(r["svg"]).read()
    assert svg.tag.endswith("svg") and "BinaryCrossEntropyBackward0" in svg_text
    assert "residual: computed on the way forward, kept for the reverse sweep" in svg_text
    graphs = [torch_graph.neuron_autograd_graph(), *jgraph.neuron_graphs()]
    for reader, path, unescape in ((_dot_reader, r["dot"], lambda s: s.replace("\\n", "\n")),
                                   (_mermaid_reader, r["mermaid"],
                                    lambda s: s.replace("<br/>", "\n"))):
        nodes, edges = reader(open(path).read())
        want_nodes = {f"g{k}_{n.id}": jgraph.node_text(n) for k, g in enumerate(graphs)
                      for n in g.nodes}
        assert {k: unescape(v) for k, v in nodes.items()} == want_nodes
        assert len(edges) == sum(len(g.edges) for g in graphs)


def test_graph_command_refuses_an_output_it_cannot_write(tmp_path, capsys):
    from jaxbasics.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["graph", "--out", str(tmp_path / "file")]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_graph_node_kinds_are_checked():
    with pytest.raises(ValueError, match="node kind must be one of"):
        jgraph.Graph("t").add(jgraph.Node("a", "a", "leaf"))


def test_the_cli_offers_the_models_the_library_draws():
    """cli.graph keeps its own copy of the names so that the parser imports no PyTorch."""
    from jaxbasics.cli import graph as cli_graph

    assert cli_graph.MODELS == torch_graph.MODELS
