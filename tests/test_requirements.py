"""The package refuses, on import, dependencies older than those it was tested with, naming
each with the version found; its minimums are the ones pyproject.toml gives pip."""

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from jaxbasics import requirements

ROOT = Path(__file__).resolve().parents[1]


def test_minimums_are_those_pyproject_gives_pip():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = dict(re.fullmatch(r"([a-z_]+)>=([\d.]+)(?:,<[\d.]+)?", d).groups() for d in deps)
    assert {name: bounds[name] for name in requirements.MINIMUM} == requirements.MINIMUM


@pytest.mark.parametrize("version, numbers", [
    ("0.12.8", (0, 12, 8)), ("2.13.0+cpu", (2, 13, 0)), ("0.11.0rc1", (0, 11, 0)), (" 1 ", (1,))])
def test_release_reads_the_numeric_part(version, numbers):
    assert requirements.release(version) == numbers


@pytest.mark.parametrize("version, least, is_older", [
    ("0.8", "0.8.0", False), ("0.8.0", "0.8", False), ("0.7.2", "0.8", True),
    ("0.11.10", "0.11.2", False), ("0.10.4", "0.11.2", True), ("1.0rc1", "0.11.2", False)])
def test_older_compares_releases_with_missing_parts_as_zero(version, least, is_older):
    assert requirements.older(version, least) is is_older


def test_release_refuses_a_version_without_numbers():
    with pytest.raises(ValueError, match="version must start with a number, got 'dev'"):
        requirements.release("dev")


def test_installed_versions_pass():
    requirements.check_installed()  # the versions this suite runs with
    for name, least in requirements.MINIMUM.items():
        assert requirements.release(metadata.version(name)) >= requirements.release(least)


def test_an_old_flax_is_named_with_the_version_found_and_the_fix(monkeypatch):
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: {"flax": "0.10.4", "optax": "0.2.4"}.get(name) or real(name))
    with pytest.raises(ImportError) as err:
        requirements.check_installed()
    assert str(err.value) == ("jaxbasics needs flax >= 0.11.2 (found 0.10.4), optax >= 0.2.5 "
                              "(found 0.2.4): python -m pip install -U 'flax>=0.11.2' 'optax>=0.2.5'")


def test_a_missing_package_is_left_to_its_own_import(monkeypatch):
    real = metadata.version

    def version(name):
        if name == "chex":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    requirements.check_installed()


def test_importing_the_package_checks_before_loading_any_section():
    """A fresh interpreter whose installed Flax reads as too old: ``import jaxbasics`` stops
    with the message, and flax itself is never imported."""
    code = ("from importlib import metadata; real = metadata.version; "
            "metadata.version = lambda n: '0.9.0' if n == 'flax' else real(n)\n"
            "import sys\n"
            "try:\n    import jaxbasics\nexcept ImportError as e:\n"
            "    print(e); print('flax' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "jaxbasics needs flax >= 0.11.2 (found 0.9.0): python -m pip install -U 'flax>=0.11.2'",
        "False"]
