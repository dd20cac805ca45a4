"""The oldest JAX, Flax, Optax and chex this package runs with, checked when it is imported
(the library's set-up, before any chapter section is loaded).

pip enforces these bounds when jaxbasics is installed; run from a source tree on a machine
whose packages came from elsewhere (a lent accelerator's image, a notebook), an older Flax
would otherwise fail deep inside an import or a trace. ``pyproject.toml`` states the same
bounds (a test keeps the two equal); each was run through the whole test suite.
"""

from __future__ import annotations

import re
from importlib import metadata

MINIMUM = {"jax": "0.8", "jaxlib": "0.8", "flax": "0.11.2", "optax": "0.2.5", "chex": "0.1.90"}


def release(version: str) -> tuple[int, ...]:
    """``"0.12.8"`` -> (0, 12, 8): the leading numeric release of a version string (pre- and
    post-release and local parts such as ``rc1`` or ``+cu130`` are ignored)."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"version must start with a number, got {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def older(version: str, least: str) -> bool:
    """Whether ``version`` is an older release than ``least``, missing trailing parts read as
    0 (``"0.8"`` is not older than ``"0.8.0"``)."""
    a, b = release(version), release(least)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) < b + (0,) * (width - len(b))


def check_installed() -> None:
    """Raise ImportError naming each package of :data:`MINIMUM` older than its minimum, with
    the version found and the pip command that fixes it. A package not installed at all is
    left to its own import to report."""
    old = []
    for name, least in MINIMUM.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if older(found, least):
            old.append((name, least, found))
    if old:
        need = ", ".join(f"{n} >= {least} (found {found})" for n, least, found in old)
        pins = " ".join(f"'{n}>={least}'" for n, least, _ in old)
        raise ImportError(f"jaxbasics needs {need}: python -m pip install -U {pins}")
