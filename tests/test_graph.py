"""The computational graphs drawn (``jaxbasics graph``): PyTorch's autograd tape and JAX's
jaxprs, as data, pictures and DOT/Mermaid text."""

import re
import struct
import xml.etree.ElementTree as ET

import pytest

from jaxbasics.chapter import graph as jgraph
from jaxbasics.compare import torch_graph


def _values(g):
    return {n.label: n.value for n in g.nodes}


def test_pytorch_graph_is_the_chapters_tape_with_its_values():
    g = torch_graph.neuron_autograd_graph()
    assert sorted(g.labels("reverse")) == sorted([
        "BinaryCrossEntropyBackward0", "SigmoidBackward0", "AddBackward0", "MulBackward0",
        "AccumulateGrad (w)", "AccumulateGrad (b)"])
    assert g.labels("param") == ["w", "b"] and g.labels("output") == ["loss"]
    v = _values(g)
    assert (v["AddBackward0"], v["SigmoidBackward0"]) == ("2.42", "0.9183")  # z and a
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
    assert forward.labels("op") == ["mul", "add", "logistic", "bce (custom_jvp_call)",
                                    "reduce_sum", "div 1"]
    v = _values(forward)
    assert (v["mul"], v["add"], v["logistic"], v["L"]) == ("2.42", "2.42", "0.9183", "0.08519")
    g = _values(grad)
    assert (g["dL/dw"], g["dL/db"]) == ("-0.08983", "-0.08166")
    # the reverse sweep: every operation that depends on the cotangent dL/dL, and only those
    seed = next(n.id for n in grad.nodes if n.label == "dL/dL")
    downstream, frontier = set(), {seed}
    while frontier:
        downstream |= frontier
        frontier = {t for s, t, _ in grad.edges if s in frontier} - downstream
    reverse = {n.id for n in grad.nodes if n.kind == "reverse"}
    ops = {n.id for n in grad.nodes if n.kind in ("op", "reverse")}
    assert reverse == downstream & ops and len(reverse) >= 3
    assert all(label == "f32[]" for _, _, label in grad.edges)  # scalars: shapes on the edges


def test_simplenet_graphs_name_the_layers_and_collapse_chains():
    tg = torch_graph.simplenet_autograd_graph()
    assert {"AddmmBackward0", "ReluBackward0", "SigmoidBackward0", "TBackward0",
            "BinaryCrossEntropyBackward0"} == {lab for lab in tg.labels("reverse")
                                               if not lab.startswith("AccumulateGrad")}
    assert sorted(tg.labels("param")) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    forward, grad = jgraph.simplenet_graphs()
    assert grad.labels("output") == ["dL/dfc1.bias", "dL/dfc1.kernel", "dL/dfc2.bias",
                                     "dL/dfc2.kernel"]
    small = jgraph.collapse_chains(grad)
    assert small.count() < grad.count()
    for kind in ("input", "param", "output"):
        assert small.labels(kind) == grad.labels(kind)
    assert any(" → " in lab for lab in small.labels("op", "reverse"))


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
    assert _png_size(r["png"]) == tuple(r["size_px"])
    assert r["size_px"][0] > 1000 and (tmp_path / "neuron.png").stat().st_size > 20_000
    svg = ET.parse(r["svg"]).getroot()
    assert svg.tag.endswith("svg") and "BinaryCrossEntropyBackward0" in open(r["svg"]).read()
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
