"""Helpers shared by the tests."""

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
