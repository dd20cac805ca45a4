"""The README's two set-up commands exist, and CI runs the test command verbatim."""

import re
from pathlib import Path

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
