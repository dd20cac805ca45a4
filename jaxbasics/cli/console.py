"""Rich console for the CLI's tables (shared by tour, compare, train, bench)."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(min_width: int = 130, *, quiet: bool = False) -> Console:
    """A console that keeps tables readable when output goes to a file or pipe (where rich
    would otherwise assume 80 columns); ``quiet`` prints nothing (the other processes of a
    multi-process run, whose reports process 0 prints)."""
    if sys.stdout.isatty():
        return Console(quiet=quiet)
    return Console(width=min_width, soft_wrap=True, quiet=quiet)
