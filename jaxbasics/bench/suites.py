"""Run benchmark suites at a size and collect one JSON-ready result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxbasics.bench.device import device_info

SUITES = ("neuron", "simplenet", "gpt2", "gpt2-parts", "scaling")
#: size -> settings of the small-model suites
SMALL: dict[str, dict[str, Any]] = {
    "smoke": {"batches": (1, 64), "repeats": 3, "scan_steps": 100, "compile": False},
    "cpu": {"batches": (1, 1024), "repeats": 15, "scan_steps": 1000, "compile": True},
    "full": {"batches": (1, 1024, 4096), "repeats": 25, "scan_steps": 1000, "compile": True}}


def _torch_ok() -> bool:
    from jaxbasics.compare import torch_available

    return torch_available()


def run_suites(suites: tuple[str, ...], size: str, *, compile_torch: bool | None = None,
               log: Callable[[str], Any] = print) -> dict[str, Any]:
    """``{"meta": device_info() + size, "neuron": ..., "simplenet": ..., "gpt2": ...,
    "gpt2_parts": ..., "scaling": ...}`` for the suites asked for."""
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    if size not in SMALL:
        raise ValueError(f"size must be one of {', '.join(SMALL)}, got {size!r}")
    settings = SMALL[size]
    compile_torch = bool(settings["compile"] if compile_torch is None else compile_torch)
    has_torch = _torch_ok()
    needs_torch = bool({"neuron", "simplenet", "gpt2-parts"} & set(suites))
    if needs_torch and not has_torch:
        raise RuntimeError("the neuron, simplenet and gpt2-parts suites compare with PyTorch; "
                           "install it: "
                           "python -m pip install torch==2.13.0 && python -m pip install -e "
                           "\".[compare]\"  (or run --suite gpt2 alone)")
    if needs_torch:
        from jaxbasics.bench.device import torch_device

        try:  # before anything runs: both frameworks must be timed on the same hardware
            torch_device()
        except RuntimeError as err:
            raise RuntimeError(f"{err}; or run --suite gpt2 alone (its PyTorch variants are then "
                               "recorded with this error)") from err
    out: dict[str, Any] = {"meta": {**device_info(), "size": size, "suites": list(suites),
                                    "dtype": "float32 (gpt2: float32 and bfloat16)"}}
    if "neuron" in suites:
        from jaxbasics.compare.speed import add_ratios, time_neuron

        log("neuron: one gradient-descent step on (w, b)")
        out["neuron"] = add_ratios(time_neuron(compile_torch=compile_torch,
                                               scan_steps=settings["scan_steps"],
                                               repeats=settings["repeats"]))
    if "simplenet" in suites:
        from jaxbasics.compare.speed import add_ratios, time_simplenet

        out["simplenet"] = {}
        for b in settings["batches"]:
            log(f"simplenet: SGD step at batch {b}")
            out["simplenet"][f"b{b}"] = add_ratios(time_simplenet(
                b, compile_torch=compile_torch, repeats=settings["repeats"],
                scan_steps=settings["scan_steps"] if b <= 64 else max(20, settings["scan_steps"] // 5)))
    if "gpt2" in suites:
        from jaxbasics.bench.gpt2 import run_gpt2

        log(f"gpt2 ({size}): forward + backward + AdamW step")
        out["gpt2"] = run_gpt2(size, torch_side=has_torch, compile_torch=compile_torch)
    if "gpt2-parts" in suites:
        from jaxbasics.bench.gpt2_parts import run_gpt2_parts

        log(f"gpt2-parts ({size}): blocks, attention, head + loss, AdamW update, matmul "
            "kernels and attention's batched products, each alone")
        out["gpt2_parts"] = run_gpt2_parts(size)
    if "scaling" in suites:
        from jaxbasics.bench.scaling import run_scaling

        log(f"scaling ({size}): data-parallel GPT-2 step on 1..{min(8, out['meta']['device_count'])}"
            " devices")
        out["scaling"] = run_scaling(size)
    return out
