"""The help layout of every ``jaxbasics`` subcommand, and library messages in its words."""

from __future__ import annotations

import argparse

#: --scan-layers' words (train, bench) and the TrainOptions.scan_layers value each stands for
SCAN_LAYERS_WORDS: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, as "(default: X)", except where the help text
    already says it in words ("(default: all)" was followed by "(default: None)"; "...; default:
    a line break)" by an empty "(default: )")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or "") or "; default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def in_flags(message: str, flags: dict[str, str]) -> str:
    """A library message in a command's words: its leading field name, and every field name
    with an underscore, as the option ``flags`` maps it to (``batch_size must be`` ->
    ``--batch-size must be``); names mapped to words other than an option stay as they are."""
    import re

    field, _, rest = message.partition(" ")
    if flags.get(field, "").startswith("--"):
        message = f"{flags[field]} {rest}"
    return re.sub(r"(?<![\w-])([a-z0-9]+_[a-z0-9_]+)(?![\w])",
                  lambda m: flags[m[1]] if flags.get(m[1], "").startswith("--") else m[1],
                  message)
