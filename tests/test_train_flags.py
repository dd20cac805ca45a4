"""``jaxbasics train`` driven as a nanoGPT user drives it (issue 32, items 1-3 and 9): the
model's shape and the schedule as flags, --resume that takes the run's own options as its
defaults and extends a run, data known by content, errors in the command line's words.
Expected values are written out here (parameter counts by hand, the schedule's formula)."""

import json
import shutil

import pytest
from helpers import reference_lr

from jaxbasics.cli import build_parser, main
from jaxbasics.gpt.metrics import TIMING

STORY = "".join(f"Line {i}: the fox and the crow share bread by the well.\n" for i in range(80))
#: one small shape for every run of this file (one compiled program)
SHAPE = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context", "16",
         "--batch-size", "2", "--quiet"]


def test_preset_gpt2_with_tied_embeddings_is_gpt2s_124m_parameters():
    from jaxbasics.cli.gpt import _model_config
    from jaxbasics.gpt.config import parameter_count

    v, t, d, layers = 50257, 1024, 768, 12
    per_layer = 4 * d + (3 * d * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    tied = v * d + t * d + layers * per_layer + 2 * d
    assert tied == 124_412_160
    for extra, want in (([], tied + v * d), (["--tie-embeddings"], tied),
                        (["--tie-embeddings", "--qkv-bias"], tied + layers * 3 * d)):
        args = build_parser().parse_args(["train", "--preset", "gpt2", *extra])
        assert parameter_count(_model_config(args, 1024, v, exact=True)) == want
    args = build_parser().parse_args(["train", "--n-layer", "6", "--n-embd", "384", "--n-head", "6"])
    cfg = _model_config(args, 256, 1000, exact=True)
    assert (cfg.n_layers, cfg.emb_dim, cfg.n_heads, cfg.context_length) == (6, 384, 6, 256)
    for argv, want in ((["--depth", "5"], (5, 320, 5)), (["--depth", "4", "--n-head", "2"], (4, 256, 2))):
        cfg = _model_config(build_parser().parse_args(["train", *argv]), 64, 1000, exact=True)
        assert (cfg.n_layers, cfg.emb_dim, cfg.n_heads) == want


def test_steps_per_call_defaults_to_auto_and_takes_a_number():
    """The default reaches TrainOptions as 'auto' (4 updates a call from 50 steps on:
    test_gpt_train's call_sizes cases); a number passes through; anything else is named."""
    from jaxbasics.gpt.train import TrainOptions, resolve_steps_per_call

    assert build_parser().parse_args(["train"]).steps_per_call == "auto"
    assert build_parser().parse_args(["train", "--steps-per-call", "8"]).steps_per_call == 8
    assert resolve_steps_per_call(TrainOptions(steps=600)) == 4  # the README's stdlib runs
    assert resolve_steps_per_call(TrainOptions(steps=20)) == 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--steps-per-call", "four"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("flags")
    (root / "story.txt").write_text(STORY, encoding="utf-8")
    assert main(["prepare", str(root / "story.txt"), "--bytes", "--context", "16", "--quiet",
                 "--out", str(root / "d")]) == 0
    return root / "d"


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_shape_and_schedule_flags_train_resume_with_the_runs_own_options_and_extend(data, tmp_path,
                                                                                   capsys):
    run = tmp_path / "run"
    flags = ["--steps", "4", "--lr", "0.004", "--min-lr", "0.0004", "--schedule", "linear",
             "--warmup", "2", "--beta2", "0.99", "--grad-clip", "0.5", "--eval-every", "2",
             "--eval-batches", "1", "--sample-prompt", "", "--attention", "xla",
             "--scan-layers", "on"]
    assert main(["train", "--data", str(data), *SHAPE, *flags, "--out", str(run)]) == 0
    meta = json.loads((run / "run.json").read_text())
    cfg, opts = meta["config"], meta["options"]
    assert (cfg["n_layers"], cfg["emb_dim"], cfg["n_heads"], cfg["context_length"]) == (1, 32, 2, 16)
    assert (opts["b2"], opts["clip_norm"], opts["schedule"]) == (0.99, 0.5, "linear")
    assert opts["min_lr_ratio"] == pytest.approx(0.1)
    records = _records(run)
    for r in records:  # each update's learning rate by the formula (step s+1 used lr(s))
        assert r["lr"] == pytest.approx(reference_lr(r["step"] - 1, 0.004, 0.0004, 2, 4, "linear"),
                                        rel=1e-5)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    # a data folder copied elsewhere: --resume with nothing else typed but --data and a longer
    # --steps continues with the run's options and re-plans the schedule to 6 steps
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--data", str(moved),
                 "--save-every", "3", "--quiet"]) == 0
    assert f"resuming {run} from step 4 to step 6 (the schedule re-planned" \
        in capsys.readouterr().out
    records = _records(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records[4:]:
        assert r["lr"] == pytest.approx(reference_lr(r["step"] - 1, 0.004, 0.0004, 2, 6, "linear"), rel=1e-5)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]  # its own --eval-every
    # and its own --attention and --scan-layers (both replaced by the default 'auto')
    resumed = json.loads((run / "run.json").read_text())["options"]
    assert resumed["attention"] == "xla" and resumed["scan_layers"] is True
    # a run saved before --scan-layers existed had its layers scanned: resumed so, not 'auto'
    meta = json.loads((run / "run.json").read_text())
    del meta["options"]["scan_layers"]
    (run / "run.json").write_text(json.dumps(meta))
    assert main(["train", "--out", str(run), "--resume", "--steps", "7", "--data", str(moved),
                 "--quiet"]) == 0
    assert json.loads((run / "run.json").read_text())["options"]["scan_layers"] is True
    # nothing to do: said, and the picture drawn
    (run / "loss.png").unlink()
    assert main(["train", "--out", str(run), "--resume", "--data", str(moved), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out and (run / "loss.png").is_file()
    # a typed option that changes the results is refused in the command line's words
    assert main(["train", "--out", str(run), "--resume", "--steps", "8", "--data", str(moved),
                 "--lr", "0.002", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--lr: 0.004 there, 0.002 here" in err and err.count("\n") == 1, err
    # evaluation off: no validation records
    assert main(["train", "--data", str(data), *SHAPE, "--steps", "2", "--eval-every", "0",
                 "--out", str(tmp_path / "quiet")]) == 0
    assert not any("val_loss" in r for r in _records(tmp_path / "quiet"))
    # --scan-layers auto (the default) said where it unrolls: a narrow model on one CPU device
    assert ", layers unrolled" in capsys.readouterr().out


def test_a_run_made_from_python_with_a_custom_shape_resumes_from_the_command_line(data, tmp_path):
    from jaxbasics.gpt.config import GPTConfig
    from jaxbasics.gpt.data import PretrainData
    from jaxbasics.gpt.train import TrainOptions, train

    cfg = GPTConfig(vocab_size=257, context_length=16, emb_dim=32, n_heads=2, n_layers=1,
                    drop_rate=0.0, mlp_dim=48)
    train(cfg, PretrainData(data, 16), TrainOptions(steps=2, batch_size=2, warmup_steps=1),
          run_dir=tmp_path / "py")
    assert main(["train", "--out", str(tmp_path / "py"), "--resume", "--steps", "3",
                 "--quiet"]) == 0
    meta = json.loads((tmp_path / "py" / "run.json").read_text())
    assert meta["config"]["mlp_dim"] == 48 and meta["step"] == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--eval-every", "-1"], "--eval-every must be >= 0 (0: none), got -1"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--dropout", "1.5"], "--dropout must be"),
    (["--n-embd", "30", "--n-head", "4"], "--n-embd must be divisible by --n-head"),
    (["--min-lr", "0.1", "--lr", "0.01"], "--min-lr (as a ratio of --lr) must be"),
    (["--attention", "cudnn", "--bf16"], "--attention 'cudnn' needs an NVIDIA GPU (cuDNN), but "
                                         "JAX runs on cpu"),
])
def test_train_errors_speak_the_command_lines_words(argv, message, tmp_path, capsys):
    assert main(["train", "--quiet", "--out", str(tmp_path / "none"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxbasics train: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "none").exists()


def test_ctrl_c_during_an_evaluation_saves_it_and_a_resume_equals_the_whole_run(data, tmp_path,
                                                                                 capsys,
                                                                                 monkeypatch):
    """The step-2 record of a run stopped inside its evaluation holds val_loss, perplexity, bits
    per byte and sample, as the uninterrupted run's does; loss.png is drawn."""
    from jaxbasics.gpt import train as train_module

    argv = ["train", "--data", str(data), *SHAPE, "--steps", "4", "--eval-every", "2",
            "--eval-batches", "1", "--sample-prompt", "The "]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    evaluate = train_module._Evaluator.__call__
    calls = []

    def interrupted(self, params):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return evaluate(self, params)

    monkeypatch.setattr(train_module._Evaluator, "__call__", interrupted)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "part")]) == 130
    assert "checkpoint of step 2 saved" in capsys.readouterr().out
    assert (tmp_path / "part" / "loss.png").is_file()
    monkeypatch.setattr(train_module._Evaluator, "__call__", evaluate)
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--quiet"]) == 0

    def timeless(run):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in _records(run)]

    assert timeless(tmp_path / "part") == timeless(tmp_path / "whole")
    assert "val_bpb" in timeless(tmp_path / "part")[1] and "sample" in timeless(tmp_path / "part")[1]


def test_ctrl_c_before_the_first_step_keeps_nothing_and_says_so(data, tmp_path, capsys,
                                                                  monkeypatch):
    from jaxbasics.gpt import train as train_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module._TrainLoop, "call", stopped)
    assert main(["train", "--data", str(data), *SHAPE, "--steps", "2",
                 "--out", str(tmp_path / "early")]) == 130
    assert "interrupted before a first step was saved: nothing kept" in capsys.readouterr().out
    assert not (tmp_path / "early").exists()


def test_sigterm_saves_a_checkpoint_and_draws_the_loss(data, tmp_path):
    """A job scheduler's SIGTERM, sent once the first checkpoint exists, stops the run as
    Ctrl-C does: exit 130, the checkpoint said, loss.png drawn."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "jaxbasics", "train", "--data", str(data),
                             *SHAPE, "--steps", "100000", "--save-every", "2", "--eval-every", "0",
                             "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not (run / "run.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    step = json.loads((run / "run.json").read_text())["step"]
    assert f"checkpoint of step {step} saved" in out and (run / "loss.png").is_file()


def test_metrics_are_written_as_steps_happen_with_each_steps_speed(data, tmp_path, capsys):
    """metrics.jsonl holds every step as soon as its call ends (not at checkpoints: none is due
    in this run until its end), run.json holds no history, and each record has ms per step,
    tokens/s, model TFLOP/s and MFU against the --peak-tflops given."""
    from jaxbasics.gpt.config import GPTConfig, flops_per_token
    from jaxbasics.gpt.data import PretrainData
    from jaxbasics.gpt.train import TrainOptions, train

    run = tmp_path / "live"
    seen = []

    def on_step(step, record):
        seen.append((step, len((run / "metrics.jsonl").read_text().splitlines())))

    cfg = GPTConfig(vocab_size=257, context_length=16, emb_dim=32, n_heads=2, n_layers=1,
                    drop_rate=0.0)
    result = train(cfg, PretrainData(data, 16), TrainOptions(steps=3, batch_size=2, warmup_steps=1),
                   run_dir=run, on_step=on_step, peak_flops=2e12)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert "history" not in json.loads((run / "run.json").read_text())
    per_token = flops_per_token(cfg, 16)
    for r in result.history:
        assert r["ms_per_step"] * r["tokens_per_s"] / 1000 == pytest.approx(2 * 16)
        assert r["tflops"] == pytest.approx(r["tokens_per_s"] * per_token / 1e12)
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * per_token / 2e12)
    capsys.readouterr()
    assert main(["train", "--data", str(data), *SHAPE, "--steps", "2", "--eval-every", "2",
                 "--eval-batches", "1", "--peak-tflops", "2", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "tok/s" in out and "MFU" in out
    # sampling from the run: an empty prompt starts a new document, two samples, a --top-k
    # above the vocabulary keeps all of it (said), 20 tokens slide past the context of 16
    assert main(["generate", "--run", str(tmp_path / "cli"), "--prompt", "", "--num-samples",
                 "2", "--top-k", "100000", "--top-p", "0.9", "--temperature", "0.8",
                 "--max-new-tokens", "20"]) == 0
    shown = capsys.readouterr()
    assert shown.out.count("--- sample ") == 2 and "sample 2 of 2" in shown.out
    assert "--top-k 100000 is above the vocabulary (257 tokens): sampling from all of it" \
        in shown.err
    assert main(["generate", "--run", str(tmp_path / "cli"), "--prompt", "x",
                 "--top-p", "1.5"]) == 2
    assert "--top-p must be in (0, 1], got 1.5" in capsys.readouterr().err
