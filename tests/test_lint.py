"""The code is ruff-clean and its type hints check (mypy over the package, as configured in
pyproject.toml), so the hints that ``py.typed`` publishes are ones a type checker accepts."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [
    ["ruff", "check", "jaxbasics", "tests", "benchmarks"],
    ["mypy"],
], ids=["ruff", "mypy"])
def test_linter_passes(command):
    done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
