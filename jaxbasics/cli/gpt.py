"""``jaxbasics train`` and ``jaxbasics generate``: GPT-2 from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from jaxbasics.gpt.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``generate`` subcommands to the ``jaxbasics`` parser."""
    t = sub.add_parser(
        "train", help="train a GPT-2 on the embedded addition task (default) or a UTF-8 text file",
        description="Train a GPT-2 style model with AdamW, warmup + cosine schedule and gradient "
                    "clipping. Without --text it learns 3-digit addition written as text "
                    "(about two minutes on 2 CPU cores) and reports held-out accuracy. Writes "
                    "OUT/loss.png and an orbax checkpoint in OUT; --resume continues from it.")
    t.add_argument("--text", type=Path, help="UTF-8 text file to train on (byte-level tokens)")
    t.add_argument("--digits", type=int, default=3, help="addition task: digits per operand")
    t.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--warmup", type=int, default=100, help="warmup steps")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per update")
    t.add_argument("--steps-per-call", type=int, default=1, metavar="K",
                   help="updates per compiled call, as one lax.scan (same results, less "
                        "overhead per step)")
    t.add_argument("--bf16", action="store_true", help="bfloat16 compute (float32 params)")
    t.add_argument("--remat", nargs="?", const="full", default="auto", metavar="POLICY",
                   help="recompute block activations in the backward pass: 'full' (when given "
                        "alone), 'dots' (keep matmul outputs), 'off', or 'auto' (default: "
                        "'dots' on CPU, where it is fastest, 'off' elsewhere)")
    t.add_argument("--preset", choices=["tiny", *PRESETS], default="tiny",
                   help="model size: tiny (d=128, 4 layers, 4 heads) or a GPT-2 size")
    t.add_argument("--context", type=int, default=128, help="context length for --text")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--mesh", default=None,
                   help="shard over devices, e.g. data=8 or data=2,fsdp=4 (axes data, fsdp, "
                        "tensor); multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID on every host")
    t.add_argument("--peer-timeout", type=float, default=None, metavar="SECONDS",
                   help="multi-host: how long every process may take to reach the coordinator "
                        "before this one gives up (default 120)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cache_flag(t)
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser(
        "generate", help="generate text from a trained run or a Hugging Face GPT-2 directory",
        description="Continue a prompt with greedy decoding (default) or temperature/top-k "
                    "sampling, using a KV cache. Nothing is downloaded: give --run (a directory "
                    "written by 'jaxbasics train') or --hf (config.json + model.safetensors).")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory of 'jaxbasics train'")
    src.add_argument("--hf", type=Path, help="Hugging Face GPT-2 directory")
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-cache", action="store_true", help="recompute instead of the KV cache")
    g.add_argument("--byte-tokens", action="store_true",
                   help="with --hf: read the prompt as UTF-8 byte ids (0-255) and write bytes, "
                        "whatever tokenizer files the directory has (without this, a directory "
                        "without them is refused)")
    _add_cache_flag(g)
    g.set_defaults(func=_cmd_generate)


CACHE_ENV = "JAXBASICS_COMPILE_CACHE"  # "0" (or off/false/no) turns the compilation cache off


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-compile-cache", action="store_true",
                   help=f"do not keep compiled programs in {compile_cache_dir()} (also: "
                        f"{CACHE_ENV}=0); kept, a second run with the same shapes skips compiling")


def compile_cache_dir() -> Path:
    """Where the CLI keeps XLA's compiled programs: ``$XDG_CACHE_HOME/jaxbasics/xla``, by
    default ``~/.cache/jaxbasics/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxbasics" / "xla"


def use_compile_cache(args: argparse.Namespace) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process (before anything is
    compiled), unless ``--no-compile-cache``, ``JAXBASICS_COMPILE_CACHE=0`` or a cache
    directory already chosen through ``JAX_COMPILATION_CACHE_DIR``; returns the directory in
    use by this call, or None. A directory that cannot be created is reported on stderr and
    the run goes on without the cache."""
    off = os.environ.get(CACHE_ENV, "1").strip().lower() in ("0", "off", "false", "no")
    if args.no_compile_cache or off or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    path = compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"jaxbasics: compilation cache off: cannot create {path} "
              f"({err.strerror or err})", file=sys.stderr)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def _missing_train_extra() -> str | None:
    """Name the 'train' extra's packages that are not installed, or None."""
    import importlib.util

    missing = [name for name, module in (("orbax-checkpoint", "orbax.checkpoint"),
                                         ("matplotlib", "matplotlib"),
                                         ("safetensors", "safetensors"))
               if importlib.util.find_spec(module.split(".")[0]) is None]
    if not missing:
        return None
    return (f"needs the 'train' extra ({', '.join(missing)} missing): "
            f"python -m pip install -e \".[train]\"")


def _fail(command: str, err: Exception) -> int:
    print(f"jaxbasics {command}: {err}", file=sys.stderr)
    return 2


def _model_config(args: argparse.Namespace, seq_len: int):
    from jaxbasics.gpt.config import GPTConfig

    base = PRESETS[args.preset] if args.preset != "tiny" else GPTConfig(
        emb_dim=128, n_heads=4, n_layers=4)
    context = max(16, 1 << (seq_len - 1).bit_length())  # next power of two
    return base.replace(vocab_size=256, context_length=context, drop_rate=args.dropout)


def _start(command: str, args: argparse.Namespace) -> int | None:
    """Exit status 3 with the pip command when the 'train' extra is missing; else None, with
    the compilation cache on (:func:`use_compile_cache`), before anything is compiled."""
    if (missing := _missing_train_extra()) is not None:
        print(f"jaxbasics {command}: {missing}", file=sys.stderr)
        return 3
    use_compile_cache(args)
    return None


def _cmd_train(args: argparse.Namespace) -> int:
    if (status := _start("train", args)) is not None:
        return status
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxbasics.cli.console import make_console
    from jaxbasics.cli.paths import require_writable
    from jaxbasics.cli.plots import plot_loss
    from jaxbasics.gpt.config import parameter_count
    from jaxbasics.gpt.data import AdditionTask, TextDataset
    from jaxbasics.gpt.train import (
        NonFiniteError,
        TrainOptions,
        addition_accuracy,
        task_seq_len,
        train,
    )

    try:
        mesh = None
        if args.mesh:
            from jaxbasics.gpt import sharding

            sharding.initialize_distributed(args.peer_timeout)
            mesh = sharding.make_mesh(args.mesh)
        task: Any = (TextDataset(args.text, args.context, seed=args.seed) if args.text
                     else AdditionTask(args.digits, seed=args.seed))
        cfg = _model_config(args, task_seq_len(task))
        opts = TrainOptions(steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.lr, warmup_steps=min(args.warmup, args.steps - 1),
                            weight_decay=args.weight_decay, accumulate=args.accumulate,
                            bf16=args.bf16, remat=False if args.remat == "off" else args.remat,
                            seed=args.seed, save_every=args.save_every,
                            steps_per_call=args.steps_per_call)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return _fail("train", err)
    try:
        require_writable(args.out, "--out", is_dir=True)  # before any compiling
    except ValueError as err:
        return _fail("train", err)

    import jax

    primary = jax.process_index() == 0  # of a multi-process run, only process 0 reports
    c = make_console(100, quiet=not primary)
    what = f"text file {args.text}" if args.text else f"{args.digits}-digit addition"
    c.print(f"[bold]Training[/] a GPT ({parameter_count(cfg):,} parameters: d={cfg.emb_dim}, "
            f"{cfg.n_layers} layers, {cfg.n_heads} heads, context {cfg.context_length}) on {what}"
            f"; {opts.steps} steps of {opts.batch_size}×{task_seq_len(task)} tokens"
            f"{' ×' + str(opts.accumulate) if opts.accumulate > 1 else ''}"
            f"{', bf16' if opts.bf16 else ''}"
            f"{f', mesh {dict(mesh.shape)}' if mesh is not None else ''}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=c, disable=args.quiet or not primary) as progress:
        bar = progress.add_task("compiling…", total=opts.steps)
        ran: list[int] = []

        def on_step(step: int, r: dict) -> None:
            ran.append(step)
            progress.update(bar, completed=step, description=f"loss {r['loss']:.4f}  "
                                                             f"{r['tokens_per_s']:,.0f} tok/s")
        try:
            result = train(cfg, task, opts, run_dir=args.out, resume=args.resume, on_step=on_step,
                           mesh=mesh)
        except (ValueError, FileNotFoundError) as err:
            return _fail("train", err)
        except NonFiniteError as err:
            print(f"jaxbasics train: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            c.print(f"interrupted: checkpoint saved in {args.out}; continue with --resume")
            return 130
    h = result.history
    if not ran:
        c.print(f"nothing to do: {args.out} is already at step {result.step}")
        return 0
    c.print(f"loss {h[0]['loss']:.4f} → {h[-1]['loss']:.4f} after {result.step} steps")
    if isinstance(task, AdditionTask):
        acc, examples = addition_accuracy(result.model, task)
        c.print(f"held-out accuracy (exact sum, greedy): [bold]{acc:.1%}[/]")
        for prompt, want, got in examples:
            c.print(f"  {prompt}= {got}  {'✓' if got == want else '✗ want ' + want}")
    else:
        _text_report(c, result.model, task)
    png = plot_loss(h, args.out / "loss.png", title=f"GPT on {what}") if primary \
        else args.out / "loss.png"
    c.print(f"loss curve: {png}\ncheckpoint: {args.out} (step {result.step})")
    return 0


def _text_report(c, model, task) -> None:
    import jax

    from jaxbasics.gpt.generate import generate
    from jaxbasics.gpt.train import lm_loss

    x, y = task.val_batch(16)
    c.print(f"validation loss: {float(lm_loss(model, x, y, None)):.4f} nats/byte")
    prompt = task.val[: min(32, model.cfg.context_length // 2)][None, :]
    n_new = min(100, model.cfg.context_length - prompt.shape[1])
    out = generate(model, prompt, n_new, temperature=0.8, top_k=40, rng=jax.random.key(0))
    c.print("sample:", repr(task.tokenizer.decode(list(out[0]))))


def _cmd_generate(args: argparse.Namespace) -> int:
    if (status := _start("generate", args)) is not None:
        return status
    import jax
    import numpy as np

    from jaxbasics.gpt.data import ByteTokenizer
    from jaxbasics.gpt.generate import encode_prompt, generate

    try:
        if args.hf:
            from jaxbasics.gpt.hf import load_gpt2, load_tokenizer

            # the tokenizer first: a directory without one is refused before weights are read
            tok = ByteTokenizer() if args.byte_tokens else load_tokenizer(args.hf)
            name = "the byte-level tokenizer (--byte-tokens)" if args.byte_tokens \
                else f"the tokenizer of {args.hf}"
            model = load_gpt2(args.hf)
        else:
            model, tok = _load_run(args.run)
            name = f"the byte-level tokenizer of {args.run}"
        ids = encode_prompt(tok, args.prompt, model.cfg.vocab_size, name=name)
        out = generate(model, ids, args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, rng=jax.random.key(args.seed),
                       use_cache=not args.no_cache)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail("generate", err)
    print(tok.decode(list(np.asarray(out[0]))))
    return 0


def _load_run(run_dir: Path):
    """(model, tokenizer) from a 'jaxbasics train' run directory."""
    import jax
    from flax import nnx

    from jaxbasics.gpt import checkpoint
    from jaxbasics.gpt.data import ByteTokenizer
    from jaxbasics.gpt.model import parameter_table
    from jaxbasics.gpt.train import TrainOptions, build_model, make_optimizer
    from jaxbasics.params import split_params

    meta = checkpoint.load_meta(run_dir)
    cfg, opts = checkpoint.config_of(meta), TrainOptions(**meta["options"])
    abstract = nnx.eval_shape(lambda: build_model(cfg, opts))
    graphdef, params_like = split_params(abstract)
    opt_like = jax.eval_shape(make_optimizer(opts, parameter_table(abstract)).init, params_like)
    _, params, _ = checkpoint.restore(run_dir, params_like, opt_like)
    return nnx.merge(graphdef, params), ByteTokenizer()
