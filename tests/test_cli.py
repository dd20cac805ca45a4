"""The command line: help texts and the tour's JSON carrying the chapter's numbers."""

import json
import subprocess
import sys

import pytest

from jaxbasics.cli import main


def test_tour_json_carries_the_chapter_values(capsys):
    assert main(["tour", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    n = out["neuron"]
    for key in ("grad_w", "manual_grad_w", "numerical_grad_w"):
        assert round(n[key], 4) == -0.0898
    for key in ("grad_b", "manual_grad_b", "numerical_grad_b"):
        assert round(n[key], 4) == -0.0817
    s = out["simplenet"]
    assert s["loss_after"] < s["loss_before"]
    assert s["max_abs_grad_minus_manual"] < 1e-6
    assert s["scan"]["mean_loss_last_100"] < s["scan"]["mean_loss_first_100"]
    assert out["gpt2"]["parameters_untied"] == 163_009_536
    assert out["gpt2"]["parameters_tied"] == 124_412_160
    assert "logistic" in out["graph"]["forward_jaxpr"]


def test_tour_prints_every_section(capsys):
    assert main(["tour"]) == 0
    text = capsys.readouterr().out
    for heading in ("1. Tensors", "2. Automatic differentiation", "3. The computational graph",
                    "4. Backpropagation", "5. One SGD step", "6. GPT_CONFIG_124M"):
        assert heading in text
    assert "-0.089826" in text and "-0.081660" in text
    assert "163,009,536" in text


@pytest.mark.parametrize("argv", [["--help"], ["tour", "--help"]])
def test_help_exits_zero_and_describes_commands(argv):
    done = subprocess.run([sys.executable, "-m", "jaxbasics", *argv], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0
    assert "usage: jaxbasics" in done.stdout
    if argv == ["--help"]:
        assert "tour" in done.stdout


def test_unknown_command_fails_with_usage():
    done = subprocess.run([sys.executable, "-m", "jaxbasics", "nope"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr
