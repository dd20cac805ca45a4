"""Rich console for the CLI's tables (shared by tour, compare, train, bench)."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(min_width: int = 130) -> Console:
    """A console that keeps tables readable when output goes to a file or pipe (where rich
    would otherwise assume 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=min_width, soft_wrap=True)
