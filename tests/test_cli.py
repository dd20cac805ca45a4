"""The command line: help texts and the tour's JSON carrying the chapter's numbers."""

import json
import subprocess
import sys

import pytest
from helpers import run_python

from jaxbasics.cli import main


def test_tour_json_carries_the_chapter_values_and_prints_every_section(capsys, tmp_path):
    """One tour computed (it is the expensive part): its JSON, then the same values printed."""
    from jaxbasics.cli.tour import print_tour

    assert main(["tour", "--json", "--graph-out", str(tmp_path)]) == 0
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
    assert out["graph"]["picture"]["png"] == str(tmp_path / "neuron.png")
    assert (tmp_path / "neuron.png").stat().st_size > 20_000
    print_tour(out)
    text = capsys.readouterr().out
    for heading in ("1. Tensors", "2. Automatic differentiation", "3. The computational graph",
                    "4. Backpropagation", "5. One SGD step", "6. GPT_CONFIG_124M"):
        assert heading in text
    assert "-0.089826" in text and "-0.081660" in text
    assert "163,009,536" in text
    # section 3 says where its picture went (jaxbasics graph's, beside PyTorch's tape)
    assert f"Drawn beside PyTorch's autograd graph: {tmp_path / 'neuron.png'}" in text
    del out["graph"]["picture"]
    print_tour(out)
    assert "Draw it beside PyTorch's autograd graph: jaxbasics graph" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["tour", "--help"], ["compare", "--help"],
                                  ["graph", "--help"], ["train", "--help"], ["generate", "--help"],
                                  ["bench", "--help"]])
def test_help_exits_zero_and_describes_commands(argv):
    done = subprocess.run([sys.executable, "-m", "jaxbasics", *argv], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0
    assert "usage: jaxbasics" in done.stdout
    if argv == ["--help"]:
        for command in ("tour", "compare", "train", "generate", "bench"):
            assert command in done.stdout


def test_unknown_command_fails_with_usage():
    done = subprocess.run([sys.executable, "-m", "jaxbasics", "nope"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr


@pytest.mark.slow
def test_train_then_generate_from_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "20", "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "held-out accuracy" in text and "loss 5." in text
    assert (out / "loss.png").stat().st_size > 10_000 and (out / "run.json").is_file()
    assert json.loads((out / "run.json").read_text())["options"]["warmup_steps"] == 2  # 20 // 10
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == list(range(1, 21))
    assert main(["train", "--steps", "20", "--batch-size", "16", "--out", str(out), "--quiet",
                 "--resume"]) == 0
    assert "already at step 20" in capsys.readouterr().out
    # the same command again, without --resume: the finished run is kept, not overwritten
    assert main(["train", "--steps", "5", "--batch-size", "16", "--out", str(out),
                 "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"jaxbasics train: {out} already holds a run (step 20): continue it with --resume "
        f"(resume=True), replace it with --overwrite (overwrite=True), or choose another --out\n")
    assert json.loads((out / "run.json").read_text())["step"] == 20
    assert main(["generate", "--run", str(out), "--prompt", "123+456="]) == 0
    answer, note = capsys.readouterr().out.splitlines()  # 5 new tokens: 4 digits and a newline
    assert answer.startswith("123+456=") and len(answer) - len("123+456=") in (4, 5)
    assert note == (f"(the model writes sums least significant digit first: {answer[8:]} is "
                    f"{answer[8:][::-1]})")
    assert main(["generate", "--run", str(out), "--prompt", "12+34=", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("12+34=")
    assert main(["generate", "--run", str(out)]) == 2  # byte ids: no end-of-text to start from
    assert capsys.readouterr().err == (f"jaxbasics generate: --prompt is empty and the tokenizer "
                                       f"of {out} has no end-of-text token to start from: give "
                                       f"a --prompt\n")
    sidecar = json.loads((out / "run.json").read_text())
    sidecar["config"]["emb_dim"] = 64  # a sidecar that does not describe its checkpoint
    (out / "run.json").write_text(json.dumps(sidecar))
    assert main(["generate", "--run", str(out), "--prompt", "1", "--max-new-tokens", "1"]) == 2
    assert capsys.readouterr().err == (
        f"jaxbasics generate: {out}: run.json and checkpoint step 20 disagree: array "
        "params.blocks.attn.proj.bias is of shape (4, 128) in the checkpoint, but run.json's "
        "configuration gives shape (4, 64)\n")


@pytest.mark.slow
def test_train_on_a_text_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 40, encoding="utf-8")
    assert main(["train", "--text", str(corpus), "--context", "32", "--steps", "15",
                 "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "validation loss" in text and "sample:" in text


def test_tour_refuses_a_seed_out_of_range_through_main(capsys):
    assert main(["tour", "--seed", "-1"]) == 2
    assert capsys.readouterr().err == ("jaxbasics tour: --seed must be an integer in [0, 2**32), "
                                       "got -1\n")


def test_train_and_generate_report_bad_input(tmp_path, capsys):
    assert main(["train", "--text", str(tmp_path / "nope.txt"), "--quiet"]) == 2
    assert "text file not found" in capsys.readouterr().err
    assert main(["train", "--steps", "0", "--quiet"]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    assert main(["generate", "--run", str(tmp_path), "--prompt", "x"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "10", "--warmup", "50"], "--warmup 50 is longer than the run (--steps 10): the "
                                          "learning rate would never reach its peak"),
    (["--vocab-size", "300"], "--vocab-size and --tokenizer describe raw token files given "
                              "with --data"),
    (["--resume", "--out", "NOWHERE"], "no checkpoint in NOWHERE: NOWHERE/run.json does not "
                                       "exist (train with --out NOWHERE first)"),
])
def test_train_refuses_settings_before_anything_is_written(tmp_path, capsys, argv, message):
    """Nothing is created: --resume of a folder holding no run created it, then refused."""
    none = str(tmp_path / "none")
    argv = [a.replace("NOWHERE", none) for a in argv]
    assert main(["train", "--quiet", "--out", none, *argv]) == 2
    assert capsys.readouterr().err == f"jaxbasics train: {message.replace('NOWHERE', none)}\n"
    assert not (tmp_path / "none").exists()


def test_every_option_of_every_command_shows_its_default_in_help():
    """--help named no default for --out, --batch-size, --max-new-tokens, ..."""
    import argparse

    from jaxbasics.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            shown = formatter._expand_help(action) if action.help else ""
            if "default" not in shown:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


def test_a_run_whose_loss_rose_is_called_diverged():
    from jaxbasics.cli.gpt import diverged

    def run(losses):
        return [{"loss": v} for v in losses]

    assert diverged(run([5.56, 9.0, 15.3, 15.34]))  # --lr 1 --warmup 0
    assert not diverged(run([5.56, 3.0, 2.1, 2.0]))
    assert not diverged(run([5.56]))


def test_train_refuses_a_mesh_that_does_not_fit(capsys):
    assert main(["train", "--mesh", "data=3", "--quiet"]) == 2
    assert "mesh {'data': 3} needs 3 devices" in capsys.readouterr().err


def test_train_without_its_extra_says_what_to_install():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import importlib.util as u; real = u.find_spec\n"
            "u.find_spec = lambda n, *a: None if n == 'matplotlib' else real(n, *a)\n"
            "from jaxbasics.cli import main\n"
            "sys.exit(main(['train', '--quiet']))")
    done = run_python(code)
    assert done.returncode == 3
    assert "needs the 'train' extra (matplotlib missing)" in done.stderr
    assert 'pip install -e ".[train]"' in done.stderr


def test_train_and_generate_keep_compiled_programs_in_the_users_cache(tmp_path, monkeypatch, capsys):
    """On by default under $XDG_CACHE_HOME/jaxbasics/xla; off with --no-compile-cache, with
    JAXBASICS_COMPILE_CACHE=0, or where JAX_COMPILATION_CACHE_DIR already chose a folder (as
    this test session does); a folder that cannot be made is said, and the run goes on."""
    import jax

    from jaxbasics.cli import build_parser
    from jaxbasics.cli.gpt import use_compile_cache

    set_to = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: set_to.__setitem__(name, value))
    parse = build_parser().parse_args
    assert use_compile_cache(parse(["train"])) is None and not set_to  # the session's own cache
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for argv in (["train"], ["generate", "--run", "r", "--prompt", "x"]):
        assert use_compile_cache(parse(argv)) == tmp_path / "jaxbasics" / "xla"
        assert set_to["jax_compilation_cache_dir"] == str(tmp_path / "jaxbasics" / "xla")
    set_to.clear()
    assert use_compile_cache(parse(["train", "--no-compile-cache"])) is None and not set_to
    monkeypatch.setenv("JAXBASICS_COMPILE_CACHE", "0")
    assert use_compile_cache(parse(["train"])) is None and not set_to
    monkeypatch.delenv("JAXBASICS_COMPILE_CACHE")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert use_compile_cache(parse(["train"])) is None and not set_to
    assert "compilation cache off: cannot create" in capsys.readouterr().err


def test_train_refuses_an_output_it_cannot_write_before_compiling(tmp_path, capsys, monkeypatch):
    """--out naming an existing file trained to the end, then crashed saving nothing."""
    from jaxbasics.gpt import train as gpt_train

    monkeypatch.setattr(gpt_train, "build_model", lambda *a: pytest.fail("built a model"))
    taken = tmp_path / "taken"
    taken.write_text("not a run")
    for out, why in ((taken, f"{taken} is a file, not a folder"),
                     (taken / "run", f"{taken} is a file, not a folder")):
        assert main(["train", "--steps", "2", "--out", str(out), "--quiet"]) == 2
        assert capsys.readouterr().err == f"jaxbasics train: --out {out}: cannot write there ({why})\n"
    assert taken.read_text() == "not a run"


def test_train_exits_nonzero_naming_a_non_finite_step(tmp_path, monkeypatch, capsys):
    from jaxbasics.gpt import train as gpt_train

    def stop(*args, **kwargs):
        raise gpt_train.NonFiniteError(7, "gradient norm", float("inf"), 5, tmp_path)

    monkeypatch.setattr(gpt_train, "train", stop)
    assert main(["train", "--steps", "9", "--out", str(tmp_path), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"jaxbasics train: training stopped at step 7: its gradient norm is inf (not finite); the "
        f"last good checkpoint, step 5, is kept in {tmp_path}, nothing after it was saved\n")


def test_ctrl_c_before_a_command_handles_it_exits_130_without_a_traceback(monkeypatch, capsys):
    """Ctrl-C while the stack was imported or a step compiled printed a KeyboardInterrupt
    traceback."""
    from jaxbasics.cli import gpt as cli_gpt

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_gpt, "_start", interrupted)
    assert main(["generate", "--run", "nowhere", "--prompt", "a"]) == 130
    assert capsys.readouterr().err == "jaxbasics generate: interrupted\n"


def test_plot_draws_runs_side_by_side_and_names_what_is_not_a_run(tmp_path, capsys):
    runs = []
    for name, bpb in (("bpe", 1.9), ("bytes", 2.4)):
        run = tmp_path / name
        run.mkdir()
        records = [{"step": s, "loss": 5.0 / s, "val_bpb": bpb / s if s % 2 == 0 else None}
                   for s in range(1, 7)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(str(run))
    assert main(["plot", *runs, "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000
    from jaxbasics.gpt import plots

    seen = {}
    real = plots.plot_runs
    plots.plot_runs = lambda histories, path: seen.update(histories) or real(histories, path)
    try:  # the legend's names, in order; a count that disagrees is refused by name
        assert main(["plot", *runs, "--labels", "BPE", "bytes", "--out", str(tmp_path / "l.png")]) == 0
        assert list(seen) == ["BPE", "bytes"]
        capsys.readouterr()
        assert main(["plot", *runs, "--labels", "BPE", "--out", str(tmp_path / "m.png")]) == 2
        assert "--labels names 1 run(s), but 2 RUN(s) are given" in capsys.readouterr().err
    finally:
        plots.plot_runs = real
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\nnot json\n')
    cases = [(tmp_path / "none", f"{tmp_path / 'none'} holds no metrics.jsonl (a run directory "
                                 f"of 'jaxbasics train')"),
             (tmp_path / "bad", f"{tmp_path / 'bad' / 'metrics.jsonl'} line 2 is not JSON: not a "
                                f"metrics file of 'jaxbasics train', or a damaged one")]
    capsys.readouterr()
    for run, message in cases:
        assert main(["plot", runs[0], str(run), "--out", str(tmp_path / "q.png")]) == 2
        assert capsys.readouterr().err == f"jaxbasics plot: {message}\n"
    assert not (tmp_path / "q.png").exists()
