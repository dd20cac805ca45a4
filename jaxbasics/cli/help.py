"""The help layout of every ``jaxbasics`` subcommand."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, as "(default: X)", except where the help text
    already says it in words ("(default: all)" was followed by "(default: None)"; "...; default:
    a line break)" by an empty "(default: )")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or "") or "; default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
