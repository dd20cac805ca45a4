"""The README's two set-up commands exist, and CI runs the test command verbatim."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_install_and_test_commands_and_ci_runs_the_test_one():
    blocks = _bash_blocks()
    main_job, test_cmd = blocks[0], blocks[1]
    assert "pip install" in main_job and main_job.endswith("jaxbasics tour")
    assert test_cmd.startswith("python -m pip install torch==2.13.0 ")
    assert test_cmd.endswith("python -m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci_lines


def test_readme_python_examples_run_as_written():
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)  # noqa: S102  (the README's own code)
    loss = scope["loss"]
    assert 0.0 < float(loss) < 2.0  # BCE of a fresh SimpleNet on a balanced toy batch


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
    (r"^jaxbasics train( +#.*)?$", "jaxbasics train --steps 20",
     "the addition task's 1,500 default steps take a minute"),
    (r"sysconfig\.get_path\('stdlib'\)\)", "sysconfig.get_path('stdlib') + '/email')",
     "the standard library's email package (~50 files) instead of all of it"),
    (r"--vocab-size 4096", "--vocab-size 600 --val-fraction 0.2",
     "a vocabulary that small a corpus fills, and validation documents out of ~50 files"),
    (r"--bytes --out", "--bytes --val-fraction 0.2 --out", "as above"),
    (r"--steps 600 --batch-size 32 --eval-every 50", "--steps 4 --batch-size 4 --eval-every 2 "
     "--eval-batches 1", "a few steps"),
    (r"--stride 64", "--stride 64 --batch-size 2", "fewer windows at once"),
    (r"--mesh data=2,fsdp=4 --out runs/mesh( +#.*)?$", "--mesh data=2,fsdp=4 --out runs/mesh "
     "--steps 2 --batch-size 8", "two steps, a batch that 8 devices split"),
    (r"path/to/gpt2", "HF", "a random tiny GPT-2 saved by transformers, with a BPE tokenizer"),
    (r"--size cpu", "--size smoke --suite neuron", "the smallest suite at the smallest size"),
]
#: commands shown that the suite does not run here, and what covers them
NOT_RUN = {
    "python -m pip install": "CI runs the two set-up commands themselves (.ci/run)",
    "python -m pytest": "this is it",
    "jupyter lab notebooks/": "a server; tests/test_notebooks.py runs each notebook",
    "export JAX_COORDINATOR_ADDRESS": "several hosts; tests/test_multiprocess.py starts real "
                                      "processes",
    "jaxbasics train --mesh data=4,fsdp=8": "32 devices on 4 hosts; as above",
}


def _tiny_hf_gpt2(path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Hello, I'm a language model, and I like to talk."] * 20,
                            vocab_size=300, min_frequency=1)
    path.mkdir()
    bpe.save_model(str(path))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2,
                               n_head=4)).save_pretrained(path)


@pytest.mark.slow
def test_every_readme_command_runs_as_written_in_the_order_shown(tmp_path):
    """Each ```bash line of the README, top to bottom, in one folder (runs/ and data/ carry
    over from command to command, as for a reader), scaled down only by SMALLER; the mesh
    commands on 8 simulated CPU devices. The README's `generate` line overflowed the context
    of the model `train` had just written, and nobody ran it."""
    import subprocess

    from helpers import simulated_devices

    _tiny_hf_gpt2(tmp_path / "HF")
    lines = [line for block in _bash_blocks() for line in block.splitlines() if line.strip()]
    ran, outputs = [], {}
    for line in lines:
        if any(line.startswith(k) or f"&& {k}" in line for k in NOT_RUN) and \
                not line.startswith("python -m pip install -e . && jaxbasics tour"):
            continue
        command = line.split(" && ")[-1]  # the set-up line's install is CI's: its tour runs
        for pattern, replacement, _why in SMALLER:
            command = re.sub(pattern, replacement, command)
        env = simulated_devices(8) if "--mesh" in command else None
        script = "\n".join([*[c for c in ran if c.startswith("STDLIB=")], command])
        done = subprocess.run(["bash", "-c", "set -e\n" + script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
        ran.append(command)
        outputs[line] = done.stdout
    shown = " ".join(lines)
    assert len(ran) >= 12 and all(k in shown for k in NOT_RUN)
    answer = next(v for k, v in outputs.items() if "--prompt \"123+456=\"" in k)
    assert answer.startswith("123+456=") and "least significant digit first" in answer
    assert (tmp_path / "runs" / "stdlib" / "loss.png").is_file()
    assert (tmp_path / "runs" / "stdlib-bytes" / "metrics.jsonl").is_file()
    assert "bits per byte" in next(v for k, v in outputs.items() if "jaxbasics eval" in k)


def test_every_command_the_readme_names_in_its_text_is_run_or_covered():
    """Commands named inside sentences (`jaxbasics compare --gpt2`, ...) are each run by the
    test above or by the test named here."""
    covered = {
        "jaxbasics tour": "the set-up line", "jaxbasics compare": "tests/test_compare.py",
        "jaxbasics graph": "tests/test_graph.py", "jaxbasics compare --gpt2":
        "tests/test_compare_gpt2.py", "jaxbasics train": "the GPT-2 block",
    }
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(jaxbasics [a-z][^`]*)`", text))
    assert named and named <= set(covered), sorted(named - set(covered))
