"""Scaling GPT-2 training out over devices and hosts with JAX's own machinery: a
``jax.sharding.Mesh`` with named axes, ``NamedSharding``/``PartitionSpec`` for every
parameter and batch, and ``jax.distributed.initialize`` for several hosts.

Mesh axes:

* ``data``   — data parallel: the batch is split, parameters are replicated.
* ``fsdp``   — fully sharded data parallel: the batch is split *and* every parameter's
  model-width (``embed``) axis is sharded, so each device holds 1/fsdp of the weights and
  optimizer state; XLA inserts the all-gathers and reduce-scatters.
* ``tensor`` — tensor (Megatron-style) parallel: the attention/MLP inner axes and the vocab
  are split.

Each parameter declares its logical axis names where it is created
(:func:`jaxbasics.gpt.model.declared`, read back by
:func:`~jaxbasics.gpt.model.parameter_table`); :data:`RULES` maps them to mesh axes. A
dimension whose size the mesh axis does not divide stays replicated (e.g. GPT-2's 50,257-token
vocab). The same ``make_gpt_train_step`` is compiled with these
shardings; the numbers equal the single-device run to float32 rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbasics import checks

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
#: logical axis (:mod:`jaxbasics.gpt.model`) -> mesh axis (None: not split)
RULES = {"embed": "fsdp", "qkv": "tensor", "mlp": "tensor", "vocab": "tensor",
         "layers": None, "context": None, "residual": None, "batch": BATCH_AXES}

def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=2,fsdp=4"`` -> ``{"data": 2, "fsdp": 4}``; names from :data:`MESH_AXES`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"mesh must look like 'data=8' or 'data=2,fsdp=4', got {spec!r}")
    axes: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, size = (t.strip() for t in part.partition("="))
        if not sep or name not in MESH_AXES or not size.isdigit() or int(size) < 1:
            raise ValueError(f"mesh entry {part.strip()!r} must be AXIS=N with AXIS one of "
                             f"{', '.join(MESH_AXES)} and N >= 1 (in {spec!r})")
        if name in axes:
            raise ValueError(f"mesh axis {name!r} is given twice in {spec!r}")
        axes[name] = int(size)
    return axes


def make_mesh(axes: dict[str, int] | str, devices: list | None = None) -> Mesh:
    """A ``Mesh`` over the first ``prod(sizes)`` devices with axes ``data, fsdp, tensor`` (size
    1 where not given). The product must divide the number of devices, and in a run of several
    processes the mesh must hold devices of every process (:func:`check_every_process_in`)."""
    if isinstance(axes, str):
        axes = parse_mesh(axes)
    if not isinstance(axes, dict):
        raise TypeError(f"axes must be a dict such as {{'data': 2, 'fsdp': 4}} or a string "
                        f"such as 'data=2,fsdp=4', got {type(axes).__name__} {axes!r}")
    for name, size in axes.items():
        if name not in MESH_AXES:
            raise ValueError(f"mesh axis {name!r} is not one of {', '.join(MESH_AXES)} "
                             f"(in {axes})")
        checks.positive_int(size, f"the size of mesh axis {name!r}")
    devices = jax.devices() if devices is None else list(devices)
    shape = tuple(axes.get(name, 1) for name in MESH_AXES)
    n = int(np.prod(shape))
    if n > len(devices) or len(devices) % n:
        raise ValueError(f"mesh {axes} needs {n} devices, which must divide the "
                         f"{len(devices)} available")
    check_every_process_in(devices[:n], axes, len(devices), jax.process_count())
    return Mesh(np.asarray(devices[:n]).reshape(shape), MESH_AXES)


def check_every_process_in(chosen: list, axes: dict[str, int], available: int,
                           processes: int) -> None:
    """Raise ``ValueError`` when the ``chosen`` devices of a mesh leave one of the run's
    ``processes`` without a device: that process would compute nothing of the step while it
    believes it trains (its batch rows dropped, or the collectives waiting on it)."""
    if processes <= 1:
        return
    missing = sorted(set(range(processes)) - {int(d.process_index) for d in chosen})
    if missing:
        raise ValueError(
            f"mesh {axes} takes {len(chosen)} of the {available} devices, which leaves "
            f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
            f"{processes} without a device; in a run of several processes the mesh must use "
            f"devices of every process (all {available} devices: a mesh whose sizes multiply "
            f"to {available})")


def _mesh_axis(mesh: Mesh, logical: str, size: int, param: str) -> Any:
    if logical not in RULES:
        raise ValueError(f"parameter {param} has logical axis {logical!r}, which RULES does not "
                         f"map to a mesh axis (known: {', '.join(RULES)})")
    target = RULES[logical]
    if target is None:
        return None
    names: tuple[str, ...] = target if isinstance(target, tuple) else (target,)
    names = tuple(a for a in names if mesh.shape[a] > 1)
    total = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    if not names or size % total:
        return None
    return names if len(names) > 1 else names[0]


def param_specs(table: Any, mesh: Mesh) -> Any:
    """``PartitionSpec`` for each parameter of a GPT parameter table
    (:func:`jaxbasics.gpt.model.parameter_table`), in its tree structure (that of
    ``split_params(model)[1]``): each logical axis through :data:`RULES`, replicated where the
    mesh axis does not divide the dimension."""
    def spec(path, info):
        name = jax.tree_util.keystr(path)
        return PartitionSpec(*(_mesh_axis(mesh, a, s, name) for a, s in zip(info.axes, info.shape,
                                                                           strict=True)))
    return jax.tree_util.tree_map_with_path(spec, table)


def param_shardings(table: Any, mesh: Mesh) -> Any:
    """``NamedSharding`` for each parameter (see :func:`param_specs`)."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(table, mesh),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, *, leading: int = 0) -> NamedSharding:
    """Batch rows split over ``data`` × ``fsdp``; sequence positions not split, nor the
    ``leading`` axes before the rows (K batches for K steps, K micro-batches of one update:
    (K, B, T) has ``leading=1``, (N, K, B, T) ``leading=2``)."""
    if not (isinstance(leading, int) and 0 <= leading <= 2):
        raise ValueError(f"leading must be 0, 1 or 2 axes before the batch rows, got {leading!r}")
    return NamedSharding(mesh, PartitionSpec(*(None,) * leading, BATCH_AXES))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
    """Raise ``ValueError`` unless ``batch_size`` splits evenly over the data × fsdp devices."""
    checks.positive_int(batch_size, "batch_size")
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} must be divisible by data × fsdp = {n} "
                         f"(mesh {dict(mesh.shape)})")


#: ``rows_of(rows)``: the rows ``rows`` (a ``range``) of a global batch, along its row axis
RowsOf = Callable[[range], np.ndarray]


def global_batch(batch: np.ndarray | RowsOf, mesh: Mesh, *, leading: int = 0,
                 shape: tuple[int, ...] | None = None) -> jax.Array:
    """The global batch as one array sharded over ``mesh`` (:func:`batch_sharding`), every
    device given exactly the rows its shard holds, for any mesh and any number of processes.

    ``batch`` is the whole global batch, the same in every process (batches are a pure
    function of (seed, step)), or ``rows_of(rows)`` returning only the rows ``rows`` (a
    ``range`` along the row axis, which comes after ``leading`` axes) with ``shape`` the global
    shape; each process then reads only the rows of its own devices. A device that holds all
    rows (a mesh of ``tensor`` only) gets all rows: no process's rows are dropped.
    """
    sharding = batch_sharding(mesh, leading=leading)
    if callable(batch):
        if shape is None:
            raise ValueError("global_batch of a rows_of function needs the global shape")
        rows_of: RowsOf = batch
    else:
        whole = np.asarray(batch)
        shape = whole.shape

        def rows_of(rows: range) -> np.ndarray:
            return np.take(whole, np.arange(rows.start, rows.stop, rows.step), axis=leading)
    if len(shape) <= leading:
        raise ValueError(f"a batch with {leading} leading axes needs more than {leading} "
                         f"dimensions, got shape {shape}")
    read: dict[range, np.ndarray] = {}  # devices that hold the same rows share one read

    def shard(index: tuple[slice, ...] | None) -> np.ndarray:
        index = tuple(slice(None) for _ in shape) if index is None else index
        rows = range(*index[leading].indices(shape[leading]))
        if rows not in read:
            read[rows] = np.asarray(rows_of(rows))
        rest = tuple(slice(None) if a == leading else index[a] for a in range(len(shape)))
        return read[rows][rest]

    return jax.make_array_from_callback(tuple(shape), sharding, shard)


#: seconds that :func:`initialize_distributed` waits for every process to reach the coordinator
PEER_TIMEOUT_S = 120.0


def initialize_distributed(peer_timeout_s: float | None = None) -> bool:
    """Start multi-host JAX from ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; return False (single host) when unset.
    On managed clusters (TPU pods, SLURM) ``jax.distributed.initialize()`` finds these itself.

    When not every process reaches the coordinator within ``peer_timeout_s`` seconds (None:
    :data:`PEER_TIMEOUT_S`), the
    process ends with exit status 3 and a message naming the coordinator's address: JAX
    would wait, then abort the process from C++ with a stack trace (nothing Python can
    catch). Raises ``ValueError`` for a malformed setting, before any connection is made."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    try:
        n, i = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as err:
        raise ValueError("JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and "
                         "JAX_PROCESS_ID must be integers too") from err
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"JAX_PROCESS_ID must be in [0, JAX_NUM_PROCESSES={n}), got {i}")
    timeout = PEER_TIMEOUT_S if peer_timeout_s is None else peer_timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout < math.inf:
        raise ValueError(f"peer_timeout_s must be a number of seconds > 0, got {timeout!r}")
    arrived = threading.Event()

    def give_up() -> None:
        if not arrived.wait(timeout):
            sys.stderr.write(
                f"jaxbasics: process {i} of {n}: not every process reached the coordinator at "
                f"{address} within {timeout:g} s; start all {n} with the same "
                f"JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES and each its own "
                f"JAX_PROCESS_ID, or wait longer (--peer-timeout)\n")
            sys.stderr.flush()
            os._exit(3)

    threading.Thread(target=give_up, name="peer-timeout", daemon=True).start()
    try:  # JAX's own deadline later than ours, so that ours is the one a user meets
        jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=i,
                                   initialization_timeout=int(timeout) + 60)
    finally:
        arrived.set()
    return True


def check_processes_agree(fields: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming each field on which the processes of a multi-process run
    disagree (e.g. different ``--out`` directories, whose checkpoint barrier would wait
    forever): every process calls it with the same names, and a digest of each value
    (its JSON) is exchanged with ``multihost_utils.process_allgather``. Nothing to do with
    one process."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    def digest(value: Any) -> int:
        text = json.dumps(value, sort_keys=True, default=str).encode()
        return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") >> 1  # fits int32

    mine = np.array([digest(v) for v in fields.values()], np.int32)
    everyone = np.asarray(multihost_utils.process_allgather(mine))  # (processes, fields)
    differ = [name for j, name in enumerate(fields) if len(set(everyone[:, j].tolist())) > 1]
    if differ:
        shown = "; ".join(f"{name}: {fields[name]!r} here" for name in differ)
        raise ValueError(f"the {jax.process_count()} processes of this run disagree on "
                         f"{', '.join(differ)} (process {jax.process_index()}: {shown}); start "
                         f"every process with the same options, output directory and data")
