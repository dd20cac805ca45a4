"""The documentation site (mkdocs.yml): it builds with warnings as errors (a broken link, a
docstring the reference cannot parse, a name that no longer exists), and holds the README, the
guides, each notebook with its stored outputs and an API page per documented module. Skipped
only where the `docs` extra is not installed (CI installs it: .ci/run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the subpackages the API reference documents, each module on one page (docs/api/NAME.md)
DOCUMENTED = {"basics": "jaxbasics", "chapter": "jaxbasics/chapter", "data": "jaxbasics/data",
              "gpt": "jaxbasics/gpt", "compare": "jaxbasics/compare"}
BASICS = {"checks", "params", "losses", "step", "timing", "requirements"}


def _needs_docs_extra() -> None:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module, reason="the docs extra: pip install -e '.[docs]'")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_api_reference_lists_every_module_of_the_documented_packages():
    for page, folder in DOCUMENTED.items():
        text = (ROOT / "docs" / "api" / f"{page}.md").read_text()
        listed = {line.removeprefix("::: ").strip() for line in text.splitlines()
                  if line.startswith("::: ")}
        modules = {p.stem for p in (ROOT / folder).glob("*.py") if not p.stem.startswith("_")}
        if page == "basics":
            modules = BASICS
        assert listed == {f"{folder.replace('/', '.')}.{m}" for m in modules}, page


def test_site_builds_strict_with_the_readme_guides_notebooks_and_api(tmp_path):
    _needs_docs_extra()
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    assert "jaxbasics" in (site / "index.html").read_text()
    for guide in ("layout", "performance", "pytorch-to-jax"):
        assert (site / guide / "index.html").is_file(), guide
    # each notebook rendered with its stored outputs (not executed by the build)
    gpt = (site / "notebooks" / "03_gpt2" / "index.html").read_text()
    assert "163,009,536" in gpt and "max |by hand - causal_attention| = 0.0e+00" in gpt
    for name in ("01_tensors_and_autodiff", "02_backprop_simplenet", "04_functional_vs_oop",
                 "05_pretraining", "06_jax_for_pytorch_users"):
        assert "size: full" in (site / "notebooks" / name / "index.html").read_text(), name
    # the reference from the docstrings: a function's contract, word for word
    api = (site / "api" / "gpt" / "index.html").read_text()
    assert "causal_attention" in api and "Causal multi-head attention" in api


def test_a_stale_name_in_the_reference_fails_the_strict_build(tmp_path):
    _needs_docs_extra()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# stale\n\n::: jaxbasics.chapter.tensors.no_such_function\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {docs}\nplugins:\n  - mkdocstrings:\n"
                      f"      handlers:\n        python:\n          paths: [{ROOT}]\n")
    done = _build(config, tmp_path / "site")
    assert done.returncode != 0 and "no_such_function" in done.stderr, done.stderr[-2000:]
