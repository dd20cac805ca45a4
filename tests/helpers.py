"""Helpers shared by the tests."""

import subprocess
import sys


def run_python(code: str, env: dict | None = None, timeout: int = 600
               ) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (clean imports, own XLA flags); capture its output."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False, timeout=timeout)
