"""Benchmark results files: written as a run goes, and joined when one run was split over
several processes (the benchmarks part of the project, not a chapter topic).

A results file is the JSON of :func:`~jaxbasics.bench.suites.run_suites`: ``{"meta": ...,
"neuron": ..., "simplenet": ..., "gpt2": ..., "gpt2_parts": ..., "scaling": ...}`` with the
suites that ran. On an accelerator lent for minutes at a time the GPT-2 124M suite may be run
one timing group per process (``jaxbasics bench --suite gpt2 --variants '*fp32*'``, then
``'*bf16*'``); :func:`merge_results` joins such files into one for the tables and plots.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxbasics import checks

#: what two files must share to be joined: the same machine, software and problem size
SAME_RUN_KEYS = ("platform", "device_kind", "device_count", "size", "jax", "flax", "optax",
                 "torch")
#: what two gpt2 results must share: the same model, batch, variant set and kind of peak
SAME_GPT2_KEYS = ("config", "batch_size", "seq_len", "peak_source", "variant_set")


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write ``result`` to ``path`` as indented JSON, all at once: the new text goes to a file
    beside it that then replaces ``path``, so a run killed while writing leaves the previous
    complete file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(result, indent=1))
    os.replace(part, path)
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """A results file written by ``jaxbasics bench --out``, or ``ValueError`` naming the file
    and what is wrong with it (missing, not JSON, not a results file)."""
    path = Path(path)
    result = checks.json_object(path)
    meta = result.get("meta")
    missing = [k for k in (*SAME_RUN_KEYS, "date") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{path} is not a jaxbasics bench results file (its 'meta' lacks "
                         f"{', '.join(missing)})")
    return result


def merge_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several runs of the same machine and size: each suite from the
    one run that has it, and the gpt2 suite's variants from all of them (each run's timing
    groups kept, each variant compared with the PyTorch baseline of its own group).

    MFU is against one peak: a data-sheet peak is the same in every run, but a peak measured in
    each run (a CPU's matmul, an unknown accelerator's) varies a little, so the joined runs'
    variants are put against the first run's peak (``mfu`` recomputed from ``tokens_per_s``)
    and each run's peak is kept in ``peak_flops_of_runs``.

    Refused, naming the key and both values: runs that differ in a :data:`SAME_RUN_KEYS` or
    :data:`SAME_GPT2_KEYS` entry, a suite other than gpt2 in two runs, or a gpt2 variant in
    two runs."""
    if not results:
        raise ValueError("merge_results needs at least one results dict, got none")
    first = results[0]
    merged: dict[str, Any] = {"meta": dict(first["meta"])}
    for i, r in enumerate(results):
        for key in SAME_RUN_KEYS:
            if r["meta"].get(key) != first["meta"].get(key):
                raise ValueError(f"results {i} ran with {key}={r['meta'].get(key)!r}, results 0 "
                                 f"with {key}={first['meta'].get(key)!r}: not the same run")
        for suite, value in r.items():
            if suite == "meta":
                continue
            if suite == "gpt2" and "gpt2" in merged:
                _join_gpt2(merged["gpt2"], value, i)
            elif suite in merged:
                raise ValueError(f"suite {suite!r} is in more than one of the results given "
                                 f"(again in results {i}); give each suite once")
            else:
                merged[suite] = copy.deepcopy(value)  # a copy the join may extend
    merged["meta"]["suites"] = [s for s in merged if s != "meta"]
    merged["meta"]["complete"] = all(r["meta"].get("complete", True) for r in results)
    if len(results) > 1:
        merged["meta"]["merged_dates"] = [r["meta"].get("date") for r in results]
    return merged


def set_mfu(gpt2: dict[str, Any]) -> None:
    """Set each timed variant's ``mfu`` (tokens/s · FLOPs/token / ``peak_flops``) in a gpt2
    result, in place. An MFU above 100 % is not a measurement but a peak measured while the
    machine was busy: such a variant's ``mfu`` is None with ``mfu_disturbed`` True, and
    ``gpt2["disturbed"]`` says so (never an MFU above 100 %)."""
    peak, over = gpt2["peak_flops"], []
    for name, entry in gpt2["variants"].items():
        if "tokens_per_s" not in entry:
            continue
        mfu = entry["tokens_per_s"] * gpt2["flops_per_token"] / peak
        entry.pop("mfu_disturbed", None)
        if mfu > 1.0:
            entry["mfu"], entry["mfu_disturbed"] = None, True
            over.append(name)
        else:
            entry["mfu"] = mfu
    gpt2.pop("disturbed", None)
    if over:
        gpt2["disturbed"] = (f"{', '.join(over)} ran faster than the peak of "
                             f"{peak / 1e9:,.1f} GFLOP/s ({gpt2['peak_source']}): the machine was "
                             f"busy whenever the peak was measured, so no MFU is given for them")


def _join_gpt2(into: dict[str, Any], other: dict[str, Any], index: int) -> None:
    for key in SAME_GPT2_KEYS:
        if other.get(key) != into.get(key):
            raise ValueError(f"gpt2 of results {index} has {key}={other.get(key)!r}, the first "
                             f"gpt2 results {key}={into.get(key)!r}: not the same benchmark")
    other = copy.deepcopy(other)  # its entries may be changed below, not the caller's
    twice = sorted(set(other["variants"]) & set(into["variants"]))
    if twice:
        raise ValueError(f"gpt2 variant(s) {', '.join(twice)} in more than one of the results "
                         f"given (again in results {index})")
    into["peak_flops_of_runs"] = into.get("peak_flops_of_runs", [into["peak_flops"]]) + [
        other["peak_flops"]]
    into["variants"].update(other["variants"])
    set_mfu(into)  # the other run's variants against the first run's peak
    into["timing_groups"] = into["timing_groups"] + other["timing_groups"]
    into["complete"] = into.get("complete", True) and other.get("complete", True)
    rss = [r["host_max_rss_bytes"] for r in (into, other) if "host_max_rss_bytes" in r]
    if rss:
        into["host_max_rss_bytes"] = max(rss)
