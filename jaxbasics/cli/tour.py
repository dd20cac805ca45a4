"""``jaxbasics tour``: the whole chapter, section by section, computed live.

:func:`register` adds the subcommand (this module imports no JAX until it runs);
:func:`run_tour` computes every number and returns them as a nested dict (the ``--json``
output); :func:`print_tour` renders that dict for a person.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxbasics.cli.help import DefaultsFormatter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

LEARNING_RATE = 0.01  # the chapter's SGD learning rate


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tour`` subcommand to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "tour", help="walk the chapter section by section, computing every number (tensors → "
                     "autodiff → graph → backprop → GPT-2)",
        description="Walk the chapter: tensors, the single-neuron gradient (jax.grad vs hand "
                    "formula vs finite differences), its jaxpr, SimpleNet backprop and one SGD "
                    "step, GPT-2 config.",
        formatter_class=DefaultsFormatter)
    p.add_argument("--json", action="store_true", help="print all values as JSON instead")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the SimpleNet example (its weights and batch, the ones "
                        "compare and graph show for the same seed), in [0, 2**32)")
    p.add_argument("--graph-out", type=Path, default=None, metavar="DIR",
                   help="also draw section 3's graph beside PyTorch's (jaxbasics graph) into "
                        "DIR")
    p.set_defaults(func=cmd_tour)


def cmd_tour(args: argparse.Namespace) -> int:
    """Run the tour for parsed ``args``; a bad ``--seed`` or ``--graph-out`` exits 2 before
    anything is computed, a missing extra for ``--graph-out`` 3."""
    from jaxbasics import checks

    try:
        checks.uint32(args.seed, "--seed")
        if args.graph_out is not None:
            from jaxbasics.cli.paths import require_writable

            require_writable(args.graph_out, "--graph-out", is_dir=True)
    except ValueError as err:
        print(f"jaxbasics tour: {err}", file=sys.stderr)
        return 2
    result = run_tour(seed=args.seed)
    if args.graph_out is not None:
        from jaxbasics.cli.graph import write

        try:
            result["graph"]["picture"] = write("neuron", args.graph_out)
        except (ImportError, ValueError) as err:
            print(f"jaxbasics tour: --graph-out: {err}", file=sys.stderr)
            return 3 if isinstance(err, ImportError) else 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tour(result)
    return 0


def _tensor_section() -> dict[str, Any]:
    import jax.numpy as jnp
    import numpy as np

    from jaxbasics.chapter import tensors

    examples = {name: {"value": np.asarray(x).tolist(), **tensors.describe(x)}
                for name, x in tensors.chapter_tensors().items()}
    t2 = tensors.shape_example()
    return {
        "examples": examples,
        "default_dtypes": {"jax": tensors.default_dtypes(), "jax_x64": tensors.default_dtypes(True),
                           "torch": tensors.TORCH_DEFAULT_DTYPES},
        "to_float32": str(tensors.to_dtype(jnp.array([1, 2, 3]), "float32").dtype),
        "shape_example": {"name": tensors.SHAPE_EXAMPLE_NAME, "value": t2.tolist()},
        "reshape_3x2": tensors.reshape(t2, (3, 2)).tolist(),
        "transpose": tensors.transpose(t2).tolist(),
        "matmul_t2_t2T": tensors.matmul(t2, t2.T).tolist(),
        "functional_update": {"x.at[0, 0].set(99)": t2.at[0, 0].set(99).tolist(),
                              "x_unchanged": t2.tolist()},
    }


def _neuron_section() -> dict[str, Any]:
    from jaxbasics.chapter import neuron

    ex = neuron.CHAPTER_EXAMPLE
    values = {"x": ex.x, "w": ex.w, "b": ex.b, "y": ex.y}
    value, (gw, gb) = neuron.value_and_gradients(**values)
    mw, mb = neuron.manual_gradients(**values)
    nw, nb = neuron.numerical_gradients(**values)
    return {"inputs": {"x": ex.x, "w": ex.w, "b": ex.b, "y": ex.y},
            "z": ex.x * ex.w + ex.b, "a": float(neuron.forward(ex.w, ex.b, ex.x)),
            "loss": float(value), "grad_w": float(gw), "grad_b": float(gb),
            "manual_grad_w": float(mw), "manual_grad_b": float(mb),
            "numerical_grad_w": float(nw), "numerical_grad_b": float(nb)}


def graph_section() -> dict[str, Any]:
    """The programs ``jaxbasics graph`` draws, listed with the chapter's names and counted
    by the same function (:func:`jaxbasics.chapter.graph.program_size`)."""
    from jaxbasics.chapter import graph as jgraph

    forward, grad = jgraph.neuron_graphs()
    fs, gs = jgraph.program_size(forward), jgraph.program_size(grad)
    return {"forward_jaxpr": forward.listing, "grad_jaxpr": grad.listing,
            "forward_equations": fs["equations"], "forward_nodes": fs["nodes"],
            "grad_equations": gs["equations"], "grad_reverse_equations": gs["reverse"],
            "grad_nodes": gs["nodes"]}


def _max_abs_diff(a: Any, b: Any) -> float:
    """Largest |a - b| over all leaves of two pytrees of the same structure."""
    import jax
    import jax.numpy as jnp

    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _simplenet_section(seed: int) -> dict[str, Any]:
    import jax
    import numpy as np
    import optax

    from jaxbasics.chapter import simplenet
    from jaxbasics.chapter.train_step import make_scan_train, make_train_step
    from jaxbasics.params import loss_of_params, split_params

    model, x, y = simplenet.example(seed)  # the model and batch compare and graph show
    graphdef, params = split_params(model)
    loss_fn = loss_of_params(graphdef, simplenet.bce_loss)
    grads = jax.grad(loss_fn)(params, x, y)
    manual = simplenet.manual_gradients(params, x, y)
    grad_vs_manual = _max_abs_diff(grads, manual)

    tx = optax.sgd(LEARNING_RATE)
    step = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)
    new_params, _, loss_before = step(params, tx.init(params), x, y)
    loss_after = loss_fn(new_params, x, y)
    expected = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
    sgd_rule_diff = _max_abs_diff(new_params, expected)

    # Accumulation: PyTorch sums .grad over backward() calls; optax.MultiSteps averages k
    # micro-batches and applies one update, equal to one step on the whole batch.
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    mstep = make_train_step(graphdef, simplenet.bce_loss, multi, donate=False)
    p, s = params, multi.init(params)
    half_size = int(x.shape[0]) // 2
    for half in (slice(0, half_size), slice(half_size, None)):
        p, s, _ = mstep(p, s, x[half], y[half])
    accumulation_diff = _max_abs_diff(p, new_params)

    steps = 2000
    xs, ys = simplenet.example_batches(seed, steps, 32)
    _, _, losses = make_scan_train(graphdef, simplenet.bce_loss, tx, donate=False)(
        params, tx.init(params), xs, ys)
    return {
        "architecture": "Linear(10,5) -> ReLU -> Linear(5,1) -> Sigmoid, BCE, SGD lr=0.01",
        "seed": seed, "batch_size": int(x.shape[0]),
        "parameters": {name: list(v.shape) for name, v in simplenet.named_parameters(params)},
        "gradients": {name: np.asarray(g).round(6).tolist()
                      for name, g in simplenet.named_parameters(grads)},
        "max_abs_grad_minus_manual": grad_vs_manual,
        "loss_before": float(np.asarray(loss_before)), "loss_after": float(loss_after),
        "max_abs_sgd_rule_diff": sgd_rule_diff,
        "max_abs_multisteps_vs_full_batch": accumulation_diff,
        "scan": {"steps": steps, "batch_size": 32,
                 "mean_loss_first_100": float(losses[:100].mean()),
                 "mean_loss_last_100": float(losses[-100:].mean())},
    }


def _gpt_section() -> dict[str, Any]:
    from jaxbasics.gpt.config import GPT_CONFIG_124M, parameter_count

    cfg = GPT_CONFIG_124M
    return {"GPT_CONFIG_124M": cfg.to_dict(),
            "parameters_untied": parameter_count(cfg, tie_embeddings=False),
            "parameters_tied": parameter_count(cfg, tie_embeddings=True)}


def run_tour(seed: int = 0) -> dict[str, Any]:
    """Compute every section; returns ``{"device", "tensors", "neuron", "graph", "simplenet",
    "gpt2"}`` with plain Python values (JSON-serialisable). ``seed``: of the SimpleNet
    example (:func:`jaxbasics.chapter.simplenet.example`), an int in [0, 2**32)."""
    import jax

    return {"device": str(jax.devices()[0]), "jax_version": jax.__version__,
            "tensors": _tensor_section(), "neuron": _neuron_section(), "graph": graph_section(),
            "simplenet": _simplenet_section(seed), "gpt2": _gpt_section()}


def _kv(title: str, rows: list[tuple[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, str) else repr(value))
    return table


def print_tour(r: dict[str, Any], console: Console | None = None) -> None:
    """Render :func:`run_tour`'s result section by section."""
    import numpy as np

    from jaxbasics.cli.console import make_console

    c = console or make_console(100)
    c.rule(f"[bold]jaxbasics tour[/] — JAX {r['jax_version']} on {r['device']}")

    t = r["tensors"]
    c.print("\n[bold]1. Tensors[/] — jnp arrays stand in for torch tensors")
    c.print(_kv("the chapter's arrays", [(n, f"shape {e['shape']}, {e['dtype']}: {e['value']}")
                                        for n, e in t["examples"].items()]))
    dd = t["default_dtypes"]
    c.print(_kv("default dtypes of [1, 2, 3] and [1.0]", [
        ("JAX", f"{dd['jax']['int']} / {dd['jax']['float']}"),
        ("JAX, jax_enable_x64", f"{dd['jax_x64']['int']} / {dd['jax_x64']['float']}"),
        ("PyTorch", f"{dd['torch']['int']} / {dd['torch']['float']}"),
        ("to_dtype(int array, 'float32')", t["to_float32"])]))
    m = t["shape_example"]["name"]
    c.print(_kv(f"shape operations on a 2×3 matrix, {m} (not the 2×2 tensor2d above)", [
        (m, str(t["shape_example"]["value"])),
        (f"{m}.reshape(3, 2)  (= torch .view)", str(t["reshape_3x2"])),
        (f"{m}.T", str(t["transpose"])), (f"{m} @ {m}.T", str(t["matmul_t2_t2T"])),
        ("x.at[0, 0].set(99)", f"{t['functional_update']['x.at[0, 0].set(99)']} "
                                f"(x itself stays {t['functional_update']['x_unchanged']})")]))
    c.print("  No .view aliasing: arrays are immutable, so reshape returns a new array and "
            "in-place writes become x.at[...].set(...).")

    n = r["neuron"]
    c.print("\n[bold]2. Automatic differentiation[/] — z = x·w + b, a = σ(z), L = BCE(a, y)")
    c.print(_kv(f"x={n['inputs']['x']}, w={n['inputs']['w']}, b={n['inputs']['b']}, "
                f"y={n['inputs']['y']}", [
        ("z, a, L", f"{n['z']:.4f}, {n['a']:.6f}, {n['loss']:.6f}"),
        ("jax.grad         dL/dw, dL/db", f"{n['grad_w']:.6f}, {n['grad_b']:.6f}"),
        ("by hand (a-y)x, a-y", f"{n['manual_grad_w']:.6f}, {n['manual_grad_b']:.6f}"),
        ("finite differences", f"{n['numerical_grad_w']:.6f}, {n['numerical_grad_b']:.6f}")]))

    g = r["graph"]
    c.print("\n[bold]3. The computational graph[/] — jax.make_jaxpr of the loss: "
            f"{g['forward_equations']} equations ({g['forward_nodes']} nodes with its inputs "
            "and output, as jaxbasics graph counts them). Inputs named as in section 2 (w, b, "
            "x, y), the output L, every other value t1, t2, …; # says what a line is:")
    c.print(g["forward_jaxpr"], markup=False, highlight=False)
    c.print(f"…and of its gradient: {g['grad_equations']} equations ({g['grad_nodes']} "
            f"nodes), which JAX derives by transforming that program instead of recording a "
            f"tape: {g['grad_reverse_equations']} of them are the reverse sweep (they depend "
            "on dL/dL = 1); the others compute on the way forward the values the sweep reads, "
            "its residuals.")
    if "picture" in g:
        c.print(f"Drawn beside PyTorch's autograd graph: {g['picture']['png']} (also .svg, "
                ".dot, .mmd)")
    else:
        c.print("Draw it beside PyTorch's autograd graph: jaxbasics graph (or jaxbasics tour "
                "--graph-out DIR)")

    s = r["simplenet"]
    c.print(f"\n[bold]4. Backpropagation in SimpleNet[/] — {s['architecture']}")
    c.print(_kv(f"gradients by name (seed {s['seed']}, batch {s['batch_size']})", [
        (f"{name} {s['parameters'][name]}", str(np.round(np.asarray(v), 4).tolist()))
        for name, v in s["gradients"].items()]))
    c.print(f"  max |jax.grad − hand-written matrix chain rule| = "
            f"{s['max_abs_grad_minus_manual']:.2e}")
    c.print("\n[bold]5. One SGD step[/] — params ← params − 0.01·grad")
    c.print(_kv("", [("loss before", f"{s['loss_before']:.6f}"),
                     ("loss after", f"{s['loss_after']:.6f}"),
                     ("max |step − (p − 0.01·g)|", f"{s['max_abs_sgd_rule_diff']:.2e}"),
                     ("max |MultiSteps(2 halves) − full batch|",
                      f"{s['max_abs_multisteps_vs_full_batch']:.2e}"),
                     (f"one lax.scan of {s['scan']['steps']} steps: mean loss, "
                      "first → last 100", f"{s['scan']['mean_loss_first_100']:.4f} → "
                                         f"{s['scan']['mean_loss_last_100']:.4f}")]))
    c.print("  PyTorch's loss.backward() adds into p.grad, hence optimizer.zero_grad(); jax.grad "
            "returns fresh arrays every call. Accumulate on purpose: sum_gradients(...) or "
            "optax.MultiSteps.")

    gp = r["gpt2"]
    c.print("\n[bold]6. GPT_CONFIG_124M[/]")
    c.print(_kv("", [*gp["GPT_CONFIG_124M"].items(),
                     ("parameters, untied head", f"{gp['parameters_untied']:,}"),
                     ("parameters, head tied to token embedding", f"{gp['parameters_tied']:,}")]))
