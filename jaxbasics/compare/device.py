"""The PyTorch device that matches JAX's, and waiting for it: both frameworks are timed on the
same hardware (used by the comparison's timings and the benchmarks). PyTorch is imported inside
each function, so this module imports without it."""

from __future__ import annotations

from typing import Any

from jaxbasics import timing


def torch_device() -> str:
    """The PyTorch device that matches :func:`jaxbasics.timing.default_device`, so that both
    frameworks are timed on the same hardware: ``"cpu"`` when JAX runs on the CPU, ``"cuda"`` when it runs on
    a GPU and PyTorch was built with CUDA (then float32 matmuls are set to TF32,
    ``set_float32_matmul_precision("high")``, as XLA computes them by default on GPUs that have
    it). Anything else raises RuntimeError naming both sides: PyTorch on the host CPU timed
    against JAX on an accelerator would compare machines, not frameworks."""
    import torch

    dev = timing.default_device()
    if dev.platform == "cpu":
        return "cpu"
    if dev.platform == "gpu" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        return "cuda"
    why = ("torch.cuda.is_available() is False: a CPU-only build? install a CUDA build of "
           "PyTorch" if dev.platform == "gpu" else "PyTorch has no backend for it here")
    raise RuntimeError(f"JAX runs on {dev.platform} ({dev.device_kind}) but PyTorch cannot ({why}); "
                       "to compare on the CPU instead: jaxbasics bench --device cpu")

def torch_sync(out: Any) -> Any:
    """Wait for PyTorch's queued GPU work (nothing to wait for on CPU); returns ``out``."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out
