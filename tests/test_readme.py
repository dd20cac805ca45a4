"""The README's two set-up commands exist, and CI runs the test command verbatim."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: the guides whose commands and code run here, in this order: the README, then the page its
#: pretraining section continues on (its commands use the README's $STDLIB, data and runs)
GUIDES = ["README.md", "docs/pretraining.md"]


def _blocks(language: str, guides: list[str] = GUIDES) -> list[str]:
    return [block for guide in guides for block in
            re.findall(rf"```{language}\n(.*?)\n```", (ROOT / guide).read_text(), re.S)]


def _bash_blocks() -> list[str]:
    return _blocks("bash")


def test_readme_has_install_and_test_commands_and_ci_runs_the_test_one():
    blocks = _bash_blocks()
    main_job, test_cmd = blocks[0], blocks[1]
    assert "pip install" in main_job and main_job.endswith("jaxbasics tour")
    assert test_cmd.startswith("python -m pip install torch==2.13.0 ")
    assert test_cmd.endswith("python -m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci_lines


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    """Each ```python block of the GUIDES, in a folder of its own: the SimpleNet loss, and pretraining
    through the top-level names (prepare -> train -> evaluate -> export) on the standard
    library's email package, which leaves the run's loss.png and a folder transformers reads."""
    blocks = _blocks("python")
    scopes = []
    for i, block in enumerate(blocks):
        (tmp_path / str(i)).mkdir()
        monkeypatch.chdir(tmp_path / str(i))
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)  # noqa: S102  (the guides' own code)
        scopes.append(scope)
    loss = next(s["loss"] for s in scopes if "loss" in s)
    assert 0.0 < float(loss) < 2.0  # BCE of a fresh SimpleNet on a balanced toy batch
    pretrained = next(i for i, s in enumerate(scopes) if "score" in s)
    score, folder = scopes[pretrained]["score"], tmp_path / str(pretrained)
    assert 0 < score.bits_per_byte < 8 and score.tokens > 0
    assert (folder / "runs" / "email" / "loss.png").stat().st_size > 10_000
    assert sorted(p.name for p in (folder / "hf" / "email").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def test_readme_links_and_pictures_are_in_the_repository():
    """Every relative link and picture of the README names a file the repository holds (a
    picture kept out by .gitignore would be missing from every clone)."""
    import subprocess

    text = (ROOT / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)
               if not t.startswith(("http://", "https://", "#"))}
    assert {"docs/img/neuron.png", "docs/img/gpt2-adamw.png"} <= targets
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    assert sorted(t for t in targets if t not in tracked) == []


#: how the suite scales the README's commands down (pattern -> replacement, and why); every
#: other word of every command runs as written
SMALLER = [
    (r"^jaxbasics train( +#.*)?$", "jaxbasics train --steps 20 --batch-size 16",
     "the addition task's 1,500 default steps of 64 take a minute (the programs of "
     "test_cli's training)"),
    (r'prepare "\$STDLIB" --glob', 'prepare "$STDLIB/email" --glob',
     "the standard library's email package (~50 files) instead of all of it"),
    (r"--vocab-size 4096", "--vocab-size 600 --val-fraction 0.2",
     "a vocabulary that small a corpus fills, and validation documents out of ~50 files"),
    (r"--bytes --out", "--bytes --val-fraction 0.2 --out", "as above"),
    (r"--steps 600 --batch-size 32 --eval-every 50", "--steps 4 --batch-size 4 --eval-every 2 "
     "--eval-batches 1", "a few steps"),
    (r"--stride 64", "--stride 64 --batch-size 2", "fewer windows at once"),
    (r"--steps 100 --eval-every 50", "--steps 4 --eval-every 2 --eval-batches 1 --batch-size 4",
     "a few steps of the one-document run"),
    (r"--resume --steps 150", "--resume --steps 6", "extended by two steps"),
    (r"--warmup 10 ", "--warmup 2 ", "a warmup within those few steps"),
]
#: commands shown that the suite does not run here, and what runs them instead; each is still
#: parsed by the command line's own parser, so a flag that does not exist fails here
NOT_RUN = {
    "python -m pip install": "CI runs the two set-up commands themselves (.ci/run)",
    "python -m pytest": "this is it",
    "jupyter lab notebooks/": "a server; tests/test_notebooks.py runs each notebook",
    "python -m mkdocs serve": "a server; tests/test_docs.py builds the site, strict",
    "export JAX_COORDINATOR_ADDRESS": "several hosts; tests/test_multiprocess.py starts real "
                                      "processes",
    "jaxbasics tour": "tests/test_cli.py's tour test",
    "XLA_FLAGS=": "8 simulated devices: tests/test_sharding.py trains on every mesh kind there",
    "jaxbasics train --mesh": "32 devices on 4 hosts: tests/test_multiprocess.py",
    "jaxbasics generate --hf": "tests/test_hf.py's generate --hf test",
    "jaxbasics bench": "tests/test_bench.py's smoke suites",
}


#: runs the README's `jaxbasics` commands, given as argument lists after the shell's
#: expansion, one after the other through the console script's own entry point, in one process
#: (JAX and Flax imported once for all of them, not once a command); stops at the first failure
DRIVER = """
import contextlib, io, json, sys, traceback
from jaxbasics.cli import main
results = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
    if rc:
        break
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_readme_command_runs_as_written_in_the_order_shown(tmp_path):
    """Each ```bash line of the README, top to bottom, in one folder (runs/ and data/ carry
    over from command to command, as for a reader), scaled down only by SMALLER; what NOT_RUN
    lists is parsed, not run. Each command's words are the shell's (bash expands variables and
    quotes, as for a reader); the `jaxbasics` ones then run through the console script's entry
    point, in one Python process (DRIVER). The README's `generate` line overflowed the context
    of the model `train` had just written, and nobody ran it."""
    import json
    import shlex
    import subprocess
    import sys

    from jaxbasics.cli import build_parser

    lines = [line for block in _bash_blocks() for line in block.splitlines() if line.strip()]
    ran, commands, parsed = [], [], 0
    for line in lines:
        for command in line.split(" && "):
            if any(command.startswith(k) for k in NOT_RUN):
                words = shlex.split(command.split(" #")[0])
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words.pop(0)  # VAR=value before the command
                if words[:1] == ["jaxbasics"]:
                    build_parser().parse_args(words[1:])  # SystemExit for a flag it lacks
                    parsed += 1
                continue
            for pattern, replacement, _why in SMALLER:
                command = re.sub(pattern, replacement, command)
            ran.append(command)
            if command.startswith("jaxbasics "):
                commands.append((line, command))
    # the words of each command as bash makes them, with the README's variables set
    setup = [c for c in ran if not c.startswith("jaxbasics ")]
    argvs = []
    for _, command in commands:
        words = subprocess.run(["bash", "-c", "\n".join(["set -e", *setup,
                                                        f"printf '%s\\0' {command}"])],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60,
                               check=True).stdout.split("\0")[:-1]
        argvs.append(words[1:])  # after "jaxbasics"
    assert len(argvs) == len(commands) and all(argvs)
    run = subprocess.run([sys.executable, "-c", DRIVER], cwd=tmp_path, input=json.dumps(argvs),
                         capture_output=True, text=True, timeout=1200, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for (line, _), r in zip(commands, results, strict=False):
        assert r["rc"] == 0, f"{line}\n{r['stdout'][-1500:]}\n{r['stderr'][-3000:]}"
    assert len(results) == len(commands)
    outputs = {line: r["stdout"] for (line, _), r in zip(commands, results, strict=True)}
    assert len(ran) >= 10 and parsed >= 5
    answer, note = next(v for k, v in outputs.items() if '--prompt "123+456="' in k).splitlines()
    assert answer.startswith("123+456=") and "least significant digit first" in note
    trained = next(v for k, v in outputs.items() if "--out runs/stdlib " in k + " ")
    assert trained.count("validation loss") == 2 and "bits/byte" in trained
    assert "sample: " in trained
    assert (tmp_path / "runs" / "stdlib" / "tokenizer" / "tokenizer.json").is_file()
    sample = next(v for k, v in outputs.items() if "generate --run runs/stdlib" in k)
    assert sample.startswith("def ")  # decoded through the run's BPE tokenizer
    scored = next(v for k, v in outputs.items() if "jaxbasics eval" in k)
    assert "bits per byte" in scored and "(stride 64)" in scored
    assert (tmp_path / "pretrain.png").stat().st_size > 10_000
    assert (tmp_path / "runs" / "stdlib-bytes" / "metrics.jsonl").is_file()
    # pretraining, your way: one document split by position, a shaped run extended by --resume
    assert "split by position" in next(v for k, v in outputs.items() if "LICENSE.txt" in k)
    import json

    records = [json.loads(x) for x in (tmp_path / "runs" / "license" / "metrics.jsonl")
               .read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and "ms_per_step" in records[0]
    config = json.loads((tmp_path / "runs" / "license" / "run.json").read_text())["config"]
    assert (config["n_layers"], config["emb_dim"], config["n_heads"]) == (2, 64, 4)
    samples = next(v for k, v in outputs.items() if "generate --run runs/license" in k)
    assert samples.count("--- sample ") == 2


def test_every_command_the_readme_names_in_its_text_is_run_or_covered():
    """Commands named inside sentences (`jaxbasics compare --gpt2`, ...) are each run by the
    test above or by the test named here."""
    covered = {
        "jaxbasics tour": "tests/test_cli.py", "jaxbasics compare": "tests/test_compare.py",
        "jaxbasics graph": "tests/test_graph.py", "jaxbasics compare --gpt2":
        "tests/test_compare_gpt2.py", "jaxbasics train": "the GPT-2 block",
        "jaxbasics export": "docs/pretraining.md's commands, run after the README's",
    }
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(jaxbasics [a-z][^`]*)`", text))
    assert named and named <= set(covered), sorted(named - set(covered))
