"""mkdocs hooks (mkdocs.yml): pages whose sources live outside docs/.

The README becomes the home page (its links, written for GitHub from the repository root,
rewritten to the site's paths), the notebooks are added as pages for mkdocs-jupyter to render
with their stored outputs, and the benchmark pictures that docs/performance.md shows are
copied in. A link that still points nowhere fails the strict build.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def _readme_for_site(text: str) -> str:
    text = re.sub(r"\]\(docs/", "](", text)  # docs/layout.md -> layout.md, docs/img/ -> img/
    return text


@event_priority(100)  # before mkdocs-jupyter, which turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=_readme_for_site(
        (ROOT / "README.md").read_text(encoding="utf-8"))))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*.png")):
        files.append(File(str(path.relative_to(ROOT)), src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    # docs/*.md link the benchmark pictures and the notebooks as ../benchmarks/...,
    # ../notebooks/... (right on GitHub); on the site they sit under benchmarks/, notebooks/
    for folder in ("benchmarks", "notebooks"):
        markdown = markdown.replace(f"](../{folder}/", f"]({folder}/")
    return markdown
