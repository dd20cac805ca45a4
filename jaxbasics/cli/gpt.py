"""``jaxbasics train`` and ``jaxbasics generate``: GPT-2 from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from jaxbasics.cli.help import SCAN_LAYERS_WORDS, DefaultsFormatter, in_flags
from jaxbasics.gpt.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``generate`` subcommands to the ``jaxbasics`` parser."""
    t = sub.add_parser(
        "train", help="train a GPT-2 on the embedded addition task (default), a prepared corpus "
                      "(--data) or a UTF-8 text file (--text)",
        formatter_class=DefaultsFormatter,
        description="Train a GPT-2 style model with AdamW, warmup + cosine schedule and gradient "
                    "clipping. Without --data or --text it learns 3-digit addition written as "
                    "text (a minute or two on 2 CPU cores) and reports held-out accuracy. Writes "
                    "OUT/loss.png, OUT/metrics.jsonl, TensorBoard events in OUT/events and an "
                    "orbax checkpoint in OUT; --resume continues from it.")
    what = t.add_mutually_exclusive_group()
    what.add_argument("--data", type=Path, metavar="DATA",
                      help="a corpus written by 'jaxbasics prepare' (or a folder of nanoGPT "
                           "train.bin/val.bin or llm.c shards, with --vocab-size or "
                           "--tokenizer)")
    what.add_argument("--text", type=Path, help="UTF-8 text file to train on (byte-level tokens)")
    t.add_argument("--vocab-size", type=int, default=None,
                   help="--data of raw token files: their vocabulary size")
    t.add_argument("--tokenizer", type=Path, default=None, metavar="DIR",
                   help="--data of raw token files: their tokenizer folder")
    t.add_argument("--digits", type=int, default=3, help="addition task: digits per operand")
    t.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    run = t.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out: its own options are the defaults, and "
                          "only options typed here are compared with them (--steps, "
                          "--save-every, --steps-per-call, --attention, --scan-layers, "
                          "--quiet may differ, "
                          "any other difference is refused; data is known "
                          "by content, so a moved folder resumes); --steps beyond the run "
                          "extends it, the schedule re-planned to the new --steps from the "
                          "current step")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run that --out holds (without this, or --resume, a run "
                          "there is refused)")
    t.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=64, help="sequences per micro-batch")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    t.add_argument("--min-lr", type=float, default=None,
                   help="learning rate at the end of the decay (default: --lr / 10)")
    t.add_argument("--schedule", choices=["cosine", "linear", "constant"], default="cosine",
                   help="after warmup: cosine or linear decay to --min-lr, or constant --lr")
    t.add_argument("--warmup", type=int, default=None,
                   help="linear warmup steps, at most --steps, update s at --lr·(s+1)/(W+1) "
                        "(default: 100, or a tenth of --steps when that is fewer)")
    t.add_argument("--beta2", type=float, default=0.95, help="AdamW's β2 (β1 is 0.9)")
    t.add_argument("--grad-clip", type=float, default=1.0,
                   help="clip gradients to this global norm (0: no clipping)")
    t.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on matrices")
    t.add_argument("--accumulate", type=int, default=1,
                   help="micro-batches per update (every labelled token weighs alike)")
    t.add_argument("--steps-per-call", type=_steps_per_call, default="auto", metavar="K",
                   help="updates per compiled call, as one lax.scan (same results, less "
                        "overhead per step); auto: 4 in runs of 50 steps or more (the first "
                        "4 updates one a call, so the first loss shows at once), else 1")
    t.add_argument("--bf16", action="store_true", help="bfloat16 compute (float32 params)")
    t.add_argument("--remat", nargs="?", const="full", default="auto", metavar="POLICY",
                   help="recompute block activations in the backward pass: 'full' (when given "
                        "alone), 'dots' (keep matmul outputs), 'off', or 'auto' ('dots' on GPU "
                        "with XLA's attention and on CPU with the layers scanned, where it is "
                        "fastest, else 'off')")
    t.add_argument("--scan-layers", choices=list(SCAN_LAYERS_WORDS), default="auto",
                   help="run the blocks as one lax.scan over the layers ('on': one block "
                        "compiled whatever the depth) or unrolled ('off': faster for narrow "
                        "models on a CPU, longer to compile); 'auto': 'off' on one CPU device "
                        "up to d=256, context 256 and 12 layers, else 'on'")
    t.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto",
                   help="attention kernel: 'cudnn' (cuDNN flash attention: NVIDIA GPU, --bf16, "
                        "no --dropout), 'xla' (any device), or 'auto' ('cudnn' where it "
                        "applies, else 'xla')")
    t.add_argument("--preset", choices=["tiny", *PRESETS], default="tiny",
                   help="model size: tiny (d=128, 4 layers, 4 heads) or a GPT-2 size; "
                        "--n-layer, --n-embd, --n-head change it")
    t.add_argument("--depth", type=int, default=None, metavar="D",
                   help="one dial for the shape, as nanochat's: D blocks of width 64·D with D "
                        "heads of 64 (--n-layer, --n-embd, --n-head override a part of it)")
    t.add_argument("--n-layer", type=int, default=None, help="transformer blocks (default: "
                                                             "the preset's)")
    t.add_argument("--n-embd", type=int, default=None, help="width d of the residual stream "
                                                            "(default: the preset's)")
    t.add_argument("--n-head", type=int, default=None, help="attention heads, dividing "
                                                            "--n-embd (default: the preset's)")
    t.add_argument("--tie-embeddings", action="store_true",
                   help="the output head reuses the token embedding (GPT-2's own: --preset "
                        "gpt2 --tie-embeddings has 124,412,160 parameters)")
    t.add_argument("--qkv-bias", action="store_true",
                   help="biases on the query/key/value projections (OpenAI's GPT-2 has them)")
    t.add_argument("--context", type=int, default=128,
                   help="context length for --data, --text: the model's positions, and the "
                        "default of eval and generate")
    t.add_argument("--dropout", type=float, default=0.0, help="dropout rate")
    t.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    t.add_argument("--eval-every", type=int, default=100,
                   help="--data: validation loss, perplexity and bits per byte every N steps "
                        "(0: none)")
    t.add_argument("--eval-batches", type=int, default=8,
                   help="--data: fixed validation batches per evaluation")
    t.add_argument("--sample-prompt", default="\n",
                   help="--data: text continued by a sample at each evaluation ('' for none; "
                        "default: a line break)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights, batches and dropout")
    t.add_argument("--mesh", default=None,
                   help="shard over devices, e.g. data=8 or data=2,fsdp=4 (axes data, fsdp, "
                        "tensor); multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID on every host")
    t.add_argument("--peer-timeout", type=float, default=None, metavar="SECONDS",
                   help="multi-host: how long every process may take to reach the coordinator "
                        "before this one gives up (default 120)")
    t.add_argument("--peak-tflops", type=float, default=None, metavar="TFLOPS",
                   help="the device's peak, for MFU in every record (default: the data-sheet "
                        "dense bf16 peak of a known GPU/TPU; none on a CPU, where MFU is left "
                        "out)")
    t.add_argument("--quiet", action="store_true",
                   help="no progress bar (evaluations and the last step's speed still shown)")
    _add_cache_flag(t)
    t.set_defaults(func=_cmd_train)
    _record_typed(t)

    g = sub.add_parser(
        "generate", help="generate text from a trained run or a Hugging Face GPT-2 directory",
        formatter_class=DefaultsFormatter,
        description="Continue a prompt with greedy decoding (default) or temperature, top-k "
                    "and top-p sampling, using a KV cache. Past the model's context the window "
                    "slides: each new token is predicted from the last context-length tokens "
                    "(as nanoGPT crops), recomputed without the cache. Nothing is downloaded: "
                    "give --run (a directory written by 'jaxbasics train') or --hf (config.json "
                    "+ model.safetensors).")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory of 'jaxbasics train'")
    src.add_argument("--hf", type=Path, help="Hugging Face GPT-2 directory")
    g.add_argument("--prompt", default="",
                   help="text to continue (default: empty, which starts from the tokenizer's "
                        "end-of-text token, as a new document)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate (default: an addition run's answer, else 50)")
    g.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="continuations of the prompt, sampled side by side")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None,
                   help="sample from the k likeliest only (default: all; above the vocabulary: "
                        "all, said on stderr)")
    g.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="nucleus sampling: the likeliest tokens whose probability first reaches "
                        "P, in (0, 1] (default: all)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--no-cache", action="store_true", help="recompute instead of the KV cache")
    g.add_argument("--byte-tokens", action="store_true",
                   help="with --hf: read the prompt as UTF-8 byte ids (0-255) and write bytes, "
                        "whatever tokenizer files the directory has (without this, a directory "
                        "without them is refused)")
    _add_cache_flag(g)
    g.set_defaults(func=_cmd_generate)

    x = sub.add_parser(
        "export", help="write a run as a Hugging Face GPT-2 folder for transformers",
        formatter_class=DefaultsFormatter,
        description="Write the latest checkpoint of a run and its tokenizer as a folder that "
                    "transformers' GPT2LMHeadModel.from_pretrained and "
                    "AutoTokenizer.from_pretrained load offline: config.json, "
                    "model.safetensors, tokenizer.json, tokenizer_config.json. A model without "
                    "qkv bias gets zero biases; an untied head is saved as lm_head.")
    x.add_argument("--run", type=Path, required=True, help="run directory of 'jaxbasics train'")
    x.add_argument("--out", type=Path, required=True, help="the folder to write")
    x.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds (without this, a non-empty --out is refused)")
    x.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "plot", help="draw the validation bits per byte and training loss of runs side by side",
        formatter_class=DefaultsFormatter,
        description="Read RUN/metrics.jsonl of each run (written by 'jaxbasics train') and draw "
                    "their validation bits per byte, which compares runs whose tokenizers "
                    "differ, and their training losses into one PNG.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME",
                   help="one name per RUN for the legend, in order (default: the folders)")
    p.set_defaults(func=_cmd_plot)


def _steps_per_call(text: str) -> int | str:
    """--steps-per-call's value: 'auto' or a whole number (its range: TrainOptions)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}"
                                         ) from None


def _record_typed(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` note in ``namespace.typed`` the destination of every option given on
    the command line (``--resume`` compares only those with the run's own)."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        base = type(action)

        class Typed(base):  # type: ignore[valid-type,misc]
            def __call__(self, parser: Any, namespace: Any, values: Any,
                         option_string: Any = None) -> None:
                if getattr(namespace, "typed", None) is None:
                    namespace.typed = set()
                namespace.typed.add(self.dest)
                super().__call__(parser, namespace, values, option_string)

        action.__class__ = Typed
    parser.set_defaults(typed=None)


#: TrainOptions / GPTConfig / task fields as train's options (the words of its messages)
FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "learning_rate": "--lr",
         "warmup_steps": "--warmup", "min_lr_ratio": "--min-lr (as a ratio of --lr)",
         "schedule": "--schedule", "weight_decay": "--weight-decay", "b2": "--beta2",
         "clip_norm": "--grad-clip", "accumulate": "--accumulate", "bf16": "--bf16",
         "remat": "--remat", "attention": "--attention", "scan_layers": "--scan-layers",
         "seed": "--seed", "save_every": "--save-every",
         "steps_per_call": "--steps-per-call", "n_layers": "--n-layer", "emb_dim": "--n-embd",
         "n_heads": "--n-head", "tie_embeddings": "--tie-embeddings", "qkv_bias": "--qkv-bias",
         "drop_rate": "--dropout", "context_length": "--context", "vocab_size": "--vocab-size",
         "every": "--eval-every", "batches": "--eval-batches", "digits": "--digits",
         "data": "the data (by content)", "tokenizer": "the data's tokenizer", "kind": "the task"}


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


def _model_config(args: argparse.Namespace, seq_len: int, vocab_size: int, exact: bool):
    """The model of ``--preset``: as many positions as the training windows (``exact``: --data
    and --text, so that eval and generate default to the context it trained on), or the next
    power of two of the addition task's sequence."""
    from jaxbasics.gpt.config import GPTConfig

    base = PRESETS[args.preset] if args.preset != "tiny" else GPTConfig(
        emb_dim=128, n_heads=4, n_layers=4)
    context = seq_len if exact else max(16, 1 << (seq_len - 1).bit_length())
    shape = {}
    if args.depth is not None:
        if args.depth < 1:
            raise ValueError(f"--depth must be a positive integer, got {args.depth}")
        shape = {"n_layers": args.depth, "emb_dim": 64 * args.depth, "n_heads": args.depth}
    shape |= {field: getattr(args, dest) for dest, field in (("n_layer", "n_layers"),
              ("n_embd", "emb_dim"), ("n_head", "n_heads")) if getattr(args, dest) is not None}
    return base.replace(vocab_size=vocab_size, context_length=context, drop_rate=args.dropout,
                        tie_embeddings=args.tie_embeddings, qkv_bias=args.qkv_bias, **shape)


def _defaults_from_run(args: argparse.Namespace, meta: dict, typed: set[str]) -> None:
    """Set every option of ``args`` that the user did not type (``typed``) to what the run of
    sidecar ``meta`` was trained with: its options, its task (data, text file or addition),
    its evaluation. A configuration is taken whole (:func:`_typed_config`)."""
    o, t = meta["options"], meta["task"]
    pairs = {"steps": o["steps"], "batch_size": o["batch_size"], "lr": o["learning_rate"],
             "warmup": o["warmup_steps"], "weight_decay": o["weight_decay"],
             "accumulate": o["accumulate"], "bf16": o["bf16"],
             "remat": "off" if o["remat"] is False else o["remat"], "seed": o["seed"],
             "attention": o.get("attention", "auto"),
             # a run saved before the option existed scanned its layers: resumed as it ran
             "scan_layers": {v: k for k, v in SCAN_LAYERS_WORDS.items()}.get(
                 o.get("scan_layers", True), "auto"),
             "save_every": o["save_every"], "steps_per_call": o.get("steps_per_call", 1),
             "beta2": o.get("b2", 0.95), "schedule": o.get("schedule", "cosine"),
             "grad_clip": 0.0 if o.get("clip_norm", 1.0) == float("inf") else o.get("clip_norm", 1.0)}
    if t.get("kind") == "data":
        pairs.update(data=Path(t["path"]), context=t["context_length"])
        if not (Path(t["path"]) / "manifest.json").is_file():  # raw files: their vocabulary
            pairs["vocab_size"] = t.get("vocab_size")
            if (args.out / "tokenizer").is_dir():
                pairs["tokenizer"] = args.out / "tokenizer"
    elif t.get("kind") == "text":
        pairs.update(text=Path(t["path"]), context=t["context_length"])
    elif t.get("kind") == "addition":
        pairs["digits"] = t["digits"]
    e = meta.get("evaluation")
    pairs.update(eval_every=0) if e is None else pairs.update(
        eval_every=e["every"], eval_batches=e["batches"], sample_prompt=e["sample_prompt"] or "")
    for dest, value in pairs.items():
        if dest not in typed:
            setattr(args, dest, value)
    if "min_lr" not in typed:
        args.min_lr_ratio = o["min_lr_ratio"]  # as it was, not through lr * ratio / lr
    if "data" in typed or "text" in typed:  # another source named: the run's is not implied
        for dest in ("data", "text"):
            if dest not in typed:
                setattr(args, dest, None)


def _min_lr_ratio(args: argparse.Namespace) -> float:
    """TrainOptions.min_lr_ratio of ``--min-lr`` (default: a tenth of ``--lr``), or a resumed
    run's own ratio when ``--min-lr`` was not typed."""
    if getattr(args, "min_lr_ratio", None) is not None:
        return float(args.min_lr_ratio)
    return 0.1 if args.min_lr is None else args.min_lr / args.lr


def _typed_config(args: argparse.Namespace, typed: set[str], cfg: Any) -> Any:
    """The configuration of a resumed run (``cfg``, from its sidecar) with the shape options
    the user typed (compared with it afterwards)."""
    if "preset" in typed and args.preset != "tiny":
        base = PRESETS[args.preset]
        cfg = cfg.replace(emb_dim=base.emb_dim, n_heads=base.n_heads, n_layers=base.n_layers)
    names = {"n_layer": "n_layers", "n_embd": "emb_dim", "n_head": "n_heads",
             "tie_embeddings": "tie_embeddings", "qkv_bias": "qkv_bias", "dropout": "drop_rate",
             "context": "context_length"}
    return cfg.replace(**{field: getattr(args, dest) for dest, field in names.items()
                          if dest in typed and getattr(args, dest) is not None})


def default_warmup(steps: int) -> int:
    """``jaxbasics train``'s warmup without ``--warmup``: 100 steps, or a tenth of the run
    when that is fewer (so that a short run still decays)."""
    return min(100, steps // 10)


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
    from jaxbasics.gpt.config import parameter_count
    from jaxbasics.gpt.data import AdditionTask, PretrainData, TextDataset
    from jaxbasics.gpt.train import (
        Evaluation,
        NonFiniteError,
        TrainOptions,
        addition_accuracy,
        check_fresh,
        check_resumable,
        resolve_attention,
        resolve_layers,
        run_meta,
        task_seq_len,
        task_vocab,
        train,
    )

    try:
        typed = args.typed or set()
        old = None
        if args.resume:  # the run's own options are the defaults (only typed ones compared)
            from jaxbasics.gpt import checkpoint

            old = checkpoint.load_meta(args.out)
            _defaults_from_run(args, old, typed)
        if args.warmup is not None and args.warmup > args.steps and old is None:
            raise ValueError(f"--warmup {args.warmup} is longer than the run (--steps "
                             f"{args.steps}): the learning rate would never reach its peak")
        if (args.vocab_size is not None or args.tokenizer is not None) and args.data is None:
            raise ValueError("--vocab-size and --tokenizer describe raw token files given "
                             "with --data")
        for name in ("eval_every", "grad_clip"):
            if getattr(args, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0: none), got "
                                 f"{getattr(args, name)}")
        mesh = None
        if args.mesh:
            from jaxbasics.gpt import sharding

            sharding.initialize_distributed(args.peer_timeout)
            mesh = sharding.make_mesh(args.mesh)
        task: Any
        if args.data is not None:
            task = PretrainData(args.data, args.context, seed=args.seed,
                                vocab_size=args.vocab_size, tokenizer_dir=args.tokenizer)
        elif args.text is not None:
            task = TextDataset(args.text, args.context, seed=args.seed)
        else:
            task = AdditionTask(args.digits, seed=args.seed)
        if old is None:
            cfg = _model_config(args, task_seq_len(task), task_vocab(task),
                                exact=not isinstance(task, AdditionTask))
        else:
            cfg = _typed_config(args, typed, checkpoint.config_of(old))
        warmup = default_warmup(args.steps) if args.warmup is None else args.warmup
        opts = TrainOptions(steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.lr, warmup_steps=warmup,
                            min_lr_ratio=_min_lr_ratio(args),
                            schedule=args.schedule, b2=args.beta2,
                            clip_norm=args.grad_clip or float("inf"),
                            weight_decay=args.weight_decay, accumulate=args.accumulate,
                            bf16=args.bf16, remat=False if args.remat == "off" else args.remat,
                            attention=args.attention, seed=args.seed, save_every=args.save_every,
                            scan_layers=SCAN_LAYERS_WORDS[args.scan_layers],
                            steps_per_call=args.steps_per_call)
        # refused here, before any output; the kernel the run takes is said in its first line
        attention = resolve_attention(opts.attention, cfg, opts.bf16, mesh=mesh)
        scanned = resolve_layers(opts.scan_layers, cfg, mesh=mesh)  # said there too
        evaluation = None
        if isinstance(task, PretrainData) and task.val is not None and args.eval_every > 0:
            evaluation = Evaluation(every=args.eval_every, batches=args.eval_batches,
                                    sample_prompt=args.sample_prompt or None)
        # what the run directory holds is decided before anything is created or compiled
        if old is not None:
            old = check_resumable(args.out, run_meta(cfg, task, opts), names=FLAGS)
            if old["step"] >= opts.steps:
                print(f"nothing to do: {args.out} is already at step {old['step']} of "
                      f"{opts.steps} (give a larger --steps to extend it)")
                _draw(args.out)
                return 0
        else:
            check_fresh(args.out, args.overwrite)
        require_writable(args.out, "--out", is_dir=True)
    except (ValueError, TypeError) as err:
        return _fail("train", ValueError(in_flags(str(err), FLAGS)))
    except (FileNotFoundError, ImportError) as err:
        return _fail("train", err)

    import jax

    primary = jax.process_index() == 0  # of a multi-process run, only process 0 reports
    c = make_console(100, quiet=not primary)
    what = (f"{args.data} ({task.train.n:,} training tokens, vocabulary {task.vocab_size:,})"
            if args.data is not None else f"text file {args.text}" if args.text
            else f"{args.digits}-digit addition")
    c.print(f"[bold]Training[/] a GPT ({parameter_count(cfg):,} parameters: d={cfg.emb_dim}, "
            f"{cfg.n_layers} layers, {cfg.n_heads} heads, context {cfg.context_length}) on {what}"
            f"; {opts.steps} steps of {opts.batch_size}×{task_seq_len(task)} tokens"
            f"{' ×' + str(opts.accumulate) if opts.accumulate > 1 else ''}"
            f"{', bf16' if opts.bf16 else ''}"
            f"{', cuDNN attention' if attention == 'cudnn' else ''}"
            f"{'' if scanned else ', layers unrolled'}"
            f"{f', mesh {dict(mesh.shape)}' if mesh is not None else ''}")
    if old is not None:
        c.print(f"resuming {args.out} from step {old['step']} to step {opts.steps}"
                + (" (the schedule re-planned to the new --steps)"
                   if opts.steps != old["options"]["steps"] else ""))
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=c, disable=args.quiet or not primary) as progress:
        bar = progress.add_task("compiling… (Ctrl-C: stop and save after the step in "
                                "progress)", total=opts.steps)
        said = [0]  # records seen; the first call's time is mostly compiling

        def on_step(step: int, r: dict) -> None:
            seconds = r["ms_per_step"] / 1000
            said[0] += 1
            if said[0] == 2 and seconds > 5:
                progress.console.print(f"a step takes {seconds:.0f} s here: Ctrl-C stops after "
                                       f"the step in progress, then saves")
            progress.update(bar, completed=step, description=f"loss {r['loss']:.4f}  "
                                                             f"{_speed(r)}")
            if "val_loss" in r:
                bpb = f", {r['val_bpb']:.3f} bits/byte" if r["val_bpb"] is not None else ""
                progress.console.print(f"step {step}: validation loss {r['val_loss']:.4f} "
                                       f"(perplexity {r['val_ppl']:.2f}{bpb}); {_speed(r)}")
                if r.get("sample") and evaluation is not None:  # the prompt, then what follows
                    text = (evaluation.sample_prompt or "") + r["sample"]
                    progress.console.print(f"  sample: {text!r}")
        import signal

        def terminate(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # SIGTERM (a job scheduler's stop) saves as Ctrl-C does

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            result = train(cfg, task, opts, run_dir=args.out, resume=args.resume,
                           overwrite=args.overwrite, on_step=on_step, mesh=mesh,
                           evaluation=evaluation, peak_flops=None if args.peak_tflops is None
                           else args.peak_tflops * 1e12)
        except (ValueError, FileNotFoundError) as err:
            return _fail("train", err)
        except NonFiniteError as err:
            print(f"jaxbasics train: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            _interrupted(c, args.out, primary)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    h = result.history
    c.print(f"loss {h[0]['loss']:.4f} → {h[-1]['loss']:.4f} after {result.step} steps "
            f"(last step: {_speed(h[-1])})")
    if diverged(h):
        print(f"jaxbasics train: the loss rose from {h[0]['loss']:.4f} to {h[-1]['loss']:.4f}: "
              f"training diverged (try a lower --lr, now {args.lr:g}, or a longer --warmup)",
              file=sys.stderr)
    if isinstance(task, AdditionTask):
        acc, examples = addition_accuracy(result.model, task)
        c.print(f"held-out accuracy (exact sum, greedy): [bold]{acc:.1%}[/] (sums shown in the "
                f"usual order; the model writes them least significant digit first)")
        for prompt, want, got in examples:
            c.print(f"  {prompt}= {got}  (written {got[::-1]})  "
                    f"{'✓' if got == want else '✗ want ' + want}")
    elif isinstance(task, TextDataset):
        _text_report(c, result.model, task)
    png = args.out / "loss.png"  # drawn by train()
    c.print(f"loss curve: {png}\nmetrics: {args.out / 'metrics.jsonl'} (TensorBoard: "
            f"tensorboard --logdir {args.out})\ncheckpoint: {args.out} (step {result.step})")
    return 0


def _speed(r: dict) -> str:
    """A record's speed: ms per step, tokens/s, model TFLOP/s and MFU (where a peak is known)."""
    mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") is not None else ""
    return (f"{r['ms_per_step']:,.0f} ms/step, {r['tokens_per_s']:,.0f} tok/s, "
            f"{r['tflops']:.3g} TFLOP/s{mfu}")


def _draw(out: Path) -> None:
    """``out/loss.png`` from the run's ``metrics.jsonl``, if it has records."""
    from jaxbasics.gpt import metrics, plots

    try:
        plots.plot_loss(metrics.read(out), out / plots.LOSS_PNG, title=f"GPT: {out}")
    except (FileNotFoundError, ValueError):
        pass  # no records to draw


def _interrupted(c: Any, out: Path, primary: bool) -> None:
    """Say truthfully what an interrupted run kept, and draw its loss curve."""
    from jaxbasics.gpt import checkpoint

    try:
        meta = checkpoint.load_meta(out)
    except (FileNotFoundError, ValueError):
        c.print(f"interrupted before a first step was saved: nothing kept in {out}")
        return
    if primary:
        _draw(out)
    c.print(f"interrupted: checkpoint of step {meta['step']} saved in {out} (loss curve: "
            f"{out / 'loss.png'}); continue with --resume")


def diverged(history: list[dict]) -> bool:
    """True when a run's loss ended above where it started (the mean of its last tenth of
    steps against its first step's loss)."""
    if len(history) < 2:
        return False
    tail = history[-max(1, len(history) // 10):]
    return sum(r["loss"] for r in tail) / len(tail) > history[0]["loss"]


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


def _cmd_plot(args: argparse.Namespace) -> int:
    if (missing := _missing_train_extra()) is not None:
        print(f"jaxbasics plot: {missing}", file=sys.stderr)
        return 3

    from jaxbasics.cli.paths import require_writable
    from jaxbasics.gpt import metrics
    from jaxbasics.gpt.plots import plot_runs

    histories = {}
    try:
        if args.labels is not None and len(args.labels) != len(args.runs):
            raise ValueError(f"--labels names {len(args.labels)} run(s), but {len(args.runs)} "
                             f"RUN(s) are given: one name each, in order")
        names = args.labels or [str(run) for run in args.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"--labels must differ, got {' '.join(names)}")
        for name, run in zip(names, args.runs, strict=True):
            histories[name] = metrics.read(run)
        require_writable(args.out, "--out", is_dir=False)
    except (ValueError, FileNotFoundError) as err:
        return _fail("plot", err)
    print(f"plot: {plot_runs(histories, args.out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if (missing := _missing_train_extra()) is not None:
        print(f"jaxbasics export: {missing}", file=sys.stderr)
        return 3
    from jaxbasics.gpt.hf import export

    try:
        out = export(args.run, args.out, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        return _fail("export", err)
    print(f"exported {args.run} to {out}: load it with transformers' "
          f"GPT2LMHeadModel.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained")
    return 0


def _as_flag(err: Exception) -> Exception:
    """``err`` with generate()'s argument names as the command line spells them."""
    message = str(err)
    for name in ("max_new_tokens", "top_k", "top_p", "temperature"):
        if message.startswith(name + " "):
            return type(err)("--" + name.replace("_", "-") + message[len(name):])
    return err


def _cmd_generate(args: argparse.Namespace) -> int:
    if (status := _start("generate", args)) is not None:
        return status
    import jax
    import numpy as np

    from jaxbasics.gpt.data import ByteTokenizer
    from jaxbasics.gpt.generate import encode_prompt, generate

    task: dict = {}
    try:
        if args.hf:
            from jaxbasics.gpt.hf import load_gpt2, load_tokenizer

            # the tokenizer first: a directory without one is refused before weights are read
            tok: Any = ByteTokenizer() if args.byte_tokens else load_tokenizer(args.hf)
            name = "the byte-level tokenizer (--byte-tokens)" if args.byte_tokens \
                else f"the tokenizer of {args.hf}"
            model = load_gpt2(args.hf)
        else:
            from jaxbasics.gpt import checkpoint
            from jaxbasics.gpt.runs import load_run

            task = checkpoint.load_meta(args.run)["task"]
            model, tok = load_run(args.run)
            name = f"the tokenizer of {args.run}"
        if args.prompt:
            ids = encode_prompt(tok, args.prompt, model.cfg.vocab_size, name=name)
        elif getattr(tok, "eot_id", None) is not None and tok.eot_id < model.cfg.vocab_size:
            ids = np.asarray([[tok.eot_id]], np.int32)  # a new document
        else:
            raise ValueError(f"--prompt is empty and {name} has no end-of-text token to start "
                             f"from: give a --prompt")
        if args.num_samples < 1:
            raise ValueError(f"--num-samples must be a positive integer, got {args.num_samples}")
        if args.top_p is not None and not 0 < args.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.top_k is not None and args.top_k > model.cfg.vocab_size:
            print(f"jaxbasics generate: --top-k {args.top_k} is above the vocabulary "
                  f"({model.cfg.vocab_size:,} tokens): sampling from all of it", file=sys.stderr)
        n_new = args.max_new_tokens
        if n_new is None:  # the answer of an addition run; else 50
            n_new = int(task["digits"]) + 2 if task.get("kind") == "addition" else 50
        out = generate(model, np.repeat(ids, args.num_samples, axis=0), n_new,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       rng=jax.random.key(args.seed), use_cache=not args.no_cache)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return _fail("generate", _as_flag(err))
    for k, row in enumerate(np.asarray(out)):
        if args.num_samples > 1:
            print(f"--- sample {k + 1} of {args.num_samples} ---")
        text = tok.decode(list(row))
        print(text, end="" if text.endswith("\n") else "\n")
    if task.get("kind") == "addition" and "=" in args.prompt:
        written = text[len(args.prompt):].split("\n")[0]
        print(f"(the model writes sums least significant digit first: {written} is "
              f"{written[::-1]})")
    return 0
