"""Shared test settings: hypothesis without deadlines (first calls compile), few examples; one
persistent XLA compilation cache for the whole session; quick compiles.

The time of this suite goes to compiling. Many tests build the same program again (a fresh
``jax.jit`` of the same step over the same shapes, or the same code in a subprocess), which
JAX's in-memory cache does not recognise; the persistent cache, keyed by the program itself,
does. It lives in a temporary folder removed at the end, so no test sees another session's
programs; the environment variables reach the subprocesses that some tests start.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck, settings

# made by the first process (pytest-xdist's workers inherit it from the controller)
_OWN = "JAXBASICS_TEST_XLA_CACHE" not in os.environ
_CACHE = os.environ.setdefault("JAXBASICS_TEST_XLA_CACHE",
                               tempfile.mkdtemp(prefix="jaxbasics-tests-xla-cache-")) if _OWN \
    else os.environ["JAXBASICS_TEST_XLA_CACHE"]
# read when jax is first imported, which has not happened yet (pytest imports this file first)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# LLVM's optimisation of XLA:CPU's generated kernels is a third of each compile here and changes
# no value (XLA's own HLO passes still run; without fast-math LLVM may not reorder float
# arithmetic, and matmuls are library calls either way): these tests check values, while
# speed is measured by `jaxbasics bench`, at the default level
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
# XLA:CPU's older loop emitters for fusions compile in about half the time of the default
# MLIR ones (the suite: 7 min 13 s -> 5 min 42 s on 2 cores, docs/performance.md) and compute
# the same functions; they round some fused elementwise results differently in the last bit,
# so an update made inside a K-update lax.scan may differ from the same update made alone by
# float32 rounding. That the two are bit-identical with XLA's default emitters, as users run it
# and docs/performance.md says, is tested under the default flags in a process of its own
# (tests/test_gpt_train.py::test_k_update_calls_are_bit_identical_under_default_xla). An XLA
# that no longer knows the flag (XLA stops at an unknown one) keeps its default: asked once.
_OLD_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if _OWN and "--xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
    try:
        _known = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"], capture_output=True,
            check=False, timeout=120,
            env={**os.environ, "XLA_FLAGS": _OLD_EMITTERS, "JAX_PLATFORMS": "cpu"}
        ).returncode == 0
    except subprocess.TimeoutExpired:  # a host too busy to tell: XLA's default, only slower
        _known = False
    if _known:
        os.environ["XLA_FLAGS"] += " " + _OLD_EMITTERS

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(items):
    """The tests marked slow first, so that the workers share them out while the quick ones
    fill the gaps: the run ends on short tests, not on one long one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session, exitstatus):
    if _OWN:
        shutil.rmtree(_CACHE, ignore_errors=True)
        os.environ.pop("JAXBASICS_TEST_XLA_CACHE", None)
