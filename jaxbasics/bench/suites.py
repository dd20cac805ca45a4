"""Run benchmark suites at a size and collect one JSON-ready result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jaxbasics import timing
from jaxbasics.bench import device
from jaxbasics.compare.device import torch_device

SUITES = ("neuron", "simplenet", "gpt2", "gpt2-parts", "scaling")
#: suites run only when named (not by ``--suite all``): data prepares corpora on disk
NAMED_ONLY = ("data", "pretrain")
#: size -> settings of the small-model suites
SMALL: dict[str, dict[str, Any]] = {
    "smoke": {"batches": (1, 64), "repeats": 3, "scan_steps": 100, "compile": False},
    "cpu": {"batches": (1, 1024), "repeats": 15, "scan_steps": 1000, "compile": True},
    "full": {"batches": (1, 1024, 4096), "repeats": 25, "scan_steps": 1000, "compile": True}}


def _torch_ok() -> bool:
    from jaxbasics.compare import torch_available

    return torch_available()


def run_suites(suites: tuple[str, ...], size: str, *, compile_torch: bool | None = None,
               variants: Sequence[str] | None = None,
               on_update: Callable[[dict[str, Any]], Any] | None = None,
               log: Callable[[str], Any] = print,
               pretrain: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"meta": device_info() + size, "neuron": ..., "simplenet": ..., "gpt2": ...,
    "gpt2_parts": ..., "scaling": ..., "data": ...}`` for the suites asked for (``data``:
    :func:`jaxbasics.bench.data.run_data`).

    ``variants``: name patterns choosing the gpt2 suite's variants
    (:func:`~jaxbasics.bench.gpt2.select_variants`). ``on_update`` is called with the result so
    far after each suite and each of the gpt2 suite's timing groups but its last, with
    ``meta["complete"]`` False until the return: a caller that writes it each time keeps what
    finished when a run is cut short. ``pretrain``: keyword arguments of
    :func:`jaxbasics.bench.pretrain.run_pretrain` (``data``, ``preset``, ``context``,
    ``steps``, ``batch_size``)."""
    unknown = set(suites) - set(SUITES) - set(NAMED_ONLY)
    if unknown:
        raise ValueError(f"unknown suite(s) {sorted(unknown)}; choose from "
                         f"{', '.join(SUITES + NAMED_ONLY)}")
    if size not in SMALL:
        raise ValueError(f"size must be one of {', '.join(SMALL)}, got {size!r}")
    if variants is not None and "gpt2" not in suites:
        raise ValueError(f"variants (--variants) choose among the gpt2 suite's variants, and the "
                         f"suites here are {', '.join(suites)}: add gpt2 or leave variants out")
    if pretrain and "pretrain" not in suites:
        named = ", --".join(sorted(k.replace("_", "-") for k in pretrain))
        raise ValueError(f"--{named} only apply to the pretrain suite (suites here: "
                         f"{', '.join(suites)}): add pretrain or leave them out")
    settings = SMALL[size]
    compile_torch = bool(settings["compile"] if compile_torch is None else compile_torch)
    has_torch = _torch_ok()
    needs_torch = bool({"neuron", "simplenet", "gpt2-parts", "pretrain"} & set(suites))
    if needs_torch and not has_torch:
        raise RuntimeError("the neuron, simplenet, gpt2-parts and pretrain suites compare with PyTorch; "
                           "install it: "
                           "python -m pip install torch==2.13.0 && python -m pip install -e "
                           "\".[compare]\"  (or run --suite gpt2 alone)")
    if variants is not None:  # a pattern that matches nothing: refused before anything runs
        from jaxbasics.bench import gpt2

        gpt2.select_variants(gpt2.variants(timing.default_device().platform, torch_side=has_torch,
                                           compile_torch=compile_torch), variants)
    if needs_torch:
        try:  # before anything runs: both frameworks must be timed on the same hardware
            torch_device()
        except RuntimeError as err:
            raise RuntimeError(f"{err}; or run --suite gpt2 alone (its PyTorch variants are then "
                               "recorded with this error)") from err
    out: dict[str, Any] = {"meta": {**device.device_info(), "size": size, "suites": list(suites),
                                    "dtype": "float32 (gpt2: float32 and bfloat16)",
                                    "complete": False}}

    def done() -> None:
        if on_update is not None:
            on_update(out)

    if "neuron" in suites:
        from jaxbasics.compare.speed import add_ratios, time_neuron

        log("neuron: one gradient-descent step on (w, b)")
        out["neuron"] = add_ratios(time_neuron(compile_torch=compile_torch,
                                               scan_steps=settings["scan_steps"],
                                               repeats=settings["repeats"]))
        done()
    if "simplenet" in suites:
        from jaxbasics.compare.speed import add_ratios, time_simplenet

        out["simplenet"] = {}
        for b in settings["batches"]:
            log(f"simplenet: SGD step at batch {b}")
            out["simplenet"][f"b{b}"] = add_ratios(time_simplenet(
                b, compile_torch=compile_torch, repeats=settings["repeats"],
                scan_steps=settings["scan_steps"] if b <= 64 else max(20, settings["scan_steps"] // 5)))
        done()
    if "gpt2" in suites:
        from jaxbasics.bench.gpt2 import run_gpt2

        def group_done(gpt2: dict[str, Any]) -> None:
            out["gpt2"] = gpt2
            done()

        log(f"gpt2 ({size}): forward + backward + AdamW step")
        out["gpt2"] = run_gpt2(size, torch_side=has_torch, compile_torch=compile_torch,
                               only=variants, on_group=group_done, log=log)
        done()
    if "gpt2-parts" in suites:
        from jaxbasics.bench.gpt2_parts import run_gpt2_parts

        log(f"gpt2-parts ({size}): blocks, attention, head + loss, AdamW update, matmul "
            "kernels and attention's batched products, each alone")
        out["gpt2_parts"] = run_gpt2_parts(size)
        done()
    if "scaling" in suites:
        from jaxbasics.bench.scaling import run_scaling

        log(f"scaling ({size}): data-parallel GPT-2 step on 1..{min(8, out['meta']['device_count'])}"
            " devices")
        out["scaling"] = run_scaling(size)
        done()
    if "data" in suites:
        from jaxbasics.bench.data import run_data

        log(f"data ({size}): prepare's throughput and memory, batch assembly vs the GPT-2 step")
        out["data"] = run_data(size, log=log)
        done()
    if "pretrain" in suites:
        from jaxbasics.bench.pretrain import run_pretrain

        log(f"pretrain ({size}): train --data's loop beside a PyTorch loop on the same shards, "
            "each run in its own process, interleaved")
        out["pretrain"] = run_pretrain(size, compile_torch=compile_torch, log=log,
                                       **(pretrain or {}))
        done()
    out["meta"]["complete"] = True
    return out
