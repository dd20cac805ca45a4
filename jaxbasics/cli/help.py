"""The help layout of every ``jaxbasics`` subcommand."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, as "(default: X)", except where the help text
    already says it (an option whose default is None describes what that means in words:
    "(default: all)" would otherwise be followed by "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
