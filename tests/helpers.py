"""Helpers shared by the tests."""

import math
import os
import subprocess
import sys
from types import SimpleNamespace


def run_python(code: str, env: dict | None = None, timeout: int = 600
               ) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (clean imports, own XLA flags); capture its output."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False, timeout=timeout)


def simulated_devices(n: int, **extra: str) -> dict[str, str]:
    """This process's environment for a subprocess whose JAX sees ``n`` CPU devices (the
    session's XLA flags kept), with ``extra`` variables."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    return {**os.environ, "XLA_FLAGS": flags.strip(), **extra}


def jax_seen_on(monkeypatch, platform: str, device_kind: str) -> None:
    """Make the benchmark believe JAX's default device is a ``platform`` device of
    ``device_kind`` while PyTorch has no CUDA: the pairing it must refuse to time."""
    import torch

    from jaxbasics import timing

    fake = SimpleNamespace(platform=platform, device_kind=device_kind)
    monkeypatch.setattr(timing, "default_device", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def reference_lr(s: int, peak: float, end: float, warm: int, steps: int, kind: str) -> float:
    """The learning rate of update ``s``, written out apart from the library: nanoGPT's warmup
    peak·(s+1)/(W+1), then cosine or linear decay to ``end`` at ``steps`` (or constant)."""
    if s < warm:
        return peak * (s + 1) / (warm + 1)
    f = min(1.0, (s - warm) / max(steps - warm, 1))
    return {"cosine": end + (peak - end) * (1 + math.cos(math.pi * f)) / 2,
            "linear": peak - (peak - end) * f, "constant": peak}[kind]
