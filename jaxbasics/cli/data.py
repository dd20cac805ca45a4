"""``jaxbasics prepare`` (a corpus -> token shards) and ``jaxbasics eval`` (loss, perplexity and
bits per byte of a model over a prepared split)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` and ``eval`` subcommands to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "prepare", help="tokenize a corpus (text files, folders, JSON Lines) into token shards "
                        "that train and eval read (llm.c's format)",
        description="Stream the documents of SOURCE... (a file or a JSON Lines record is one "
                    "document) through a tokenizer into DATA: train_NNNNNN.bin and "
                    "val_NNNNNN.bin shards (llm.c / modded-nanogpt format), the tokenizer, and "
                    "manifest.json, written last. Documents are separated by the end-of-text "
                    "token and split by a hash of their text. Memory stays flat as the corpus "
                    "grows.")
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="UTF-8 text files, folders (walked recursively), .jsonl files")
    p.add_argument("--out", type=Path, required=True, metavar="DATA",
                   help="output folder (new, empty, or an unfinished prepare's)")
    p.add_argument("--glob", action="append", default=[], metavar="PATTERN",
                   help="which files of a folder, e.g. '**/*.py' (repeatable: their union; "
                        "default: all but hidden); NAME.gz files are read through gzip")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out a folder's files whose path below it matches, e.g. "
                        "'site-packages/*' (repeatable; default: none)")
    p.add_argument("--jsonl-field", default="text", metavar="FIELD",
                   help="the text field of .jsonl records (default text)")
    p.add_argument("--encoding", default="utf-8", metavar="CODEC",
                   help="of text files, e.g. latin-1 for legacy text (default utf-8; JSON Lines "
                        "are always UTF-8); a UTF-8 byte-order mark is dropped, not text")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokenizer", type=Path, metavar="DIR",
                     help="a Hugging Face tokenizer folder: tokenizer.json, or vocab.json + "
                          "merges.txt (GPT-2's own files)")
    tok.add_argument("--train-tokenizer", action="store_true",
                     help="train a byte-level BPE (GPT-2's scheme) on the training documents")
    tok.add_argument("--bytes", action="store_true",
                     help="UTF-8 byte ids 0-255, and 256 as end-of-text")
    p.add_argument("--vocab-size", type=int, default=None, metavar="N",
                   help="with --train-tokenizer: at most N ids (>= 257)")
    p.add_argument("--val-fraction", type=float, default=0.01, metavar="F",
                   help="share of documents for validation, by a hash of each; where that "
                        "would leave a split without a document (one story, a few files), the "
                        "tokens of the last F of the text instead, at least one window of --context (default "
                        "0.01; 0: none)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files (.jsonl: records) that are not UTF-8, counted in the "
                        "manifest, instead of refusing them")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N",
                   help="tokens per shard (default 100M, as llm.c)")
    p.add_argument("--context", type=int, default=128,
                   help="the validation split must hold one window of this context, and a split "
                        "by position is cut in such windows (default 128)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    e = sub.add_parser(
        "eval", help="loss, perplexity and bits per byte of a model over a prepared split",
        description="Score every token of a split once, in windows of the model's context; "
                    "with --stride S below it, windows overlap and each token has at least "
                    "context - S tokens of history. Bits per byte = total nats / ln 2 / UTF-8 "
                    "bytes of the text scored: comparable across tokenizers.")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run directory of 'jaxbasics train'")
    src.add_argument("--hf", type=Path, help="Hugging Face GPT-2 directory (config.json + "
                                             "model.safetensors)")
    e.add_argument("--data", type=Path, required=True,
                   help="a DATA folder written by 'jaxbasics prepare'")
    e.add_argument("--split", default="val", help="split to score (default val)")
    e.add_argument("--stride", type=int, default=None,
                   help="window step (default: the context, no overlap)")
    e.add_argument("--context", type=int, default=None,
                   help="window length (default: the model's context)")
    e.add_argument("--batch-size", type=int, default=8, help="windows per call (default 8)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)


def _fail(command: str, err: BaseException) -> int:
    print(f"jaxbasics {command}: {err}", file=sys.stderr)
    return 3 if isinstance(err, ImportError) else 2


def cmd_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare``; print what it wrote. Exit 2 with a one-line message for bad input."""
    from jaxbasics.data.prepare import PrepareOptions, prepare

    if args.train_tokenizer != (args.vocab_size is not None):
        return _fail("prepare", ValueError(
            "--train-tokenizer needs --vocab-size N" if args.train_tokenizer
            else "--vocab-size goes with --train-tokenizer (the other tokenizers have theirs)"))
    try:
        opts = PrepareOptions(val_fraction=args.val_fraction, shard_tokens=args.shard_tokens,
                              skip_bad=args.skip_bad, glob=tuple(args.glob),
                              exclude=tuple(args.exclude), jsonl_field=args.jsonl_field,
                              encoding=args.encoding, context=args.context)
    except ValueError as err:
        return _fail("prepare", ValueError(_as_option(str(err))))
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxbasics.cli.console import make_console

    c = make_console(100)
    names = {"scan": "reading", "train": "training BPE", "encode": "tokenizing"}
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description:<13}"), BarColumn(),
                  TextColumn("{task.percentage:>5.1f}%  {task.fields[rate]}"),
                  TimeElapsedColumn(), console=c, disable=args.quiet) as bar:
        tasks: dict[str, Any] = {}
        started: dict[str, float] = {}

        def progress(phase: str, done: int, total: int, tokens: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(names[phase], total=max(total, 1), rate="")
                started[phase] = time.perf_counter()
            seconds = time.perf_counter() - started[phase]
            rate = ""  # a rate over less than a quarter second says nothing
            if seconds >= 0.25:
                rate = f"{done / seconds / 1e6:,.1f} MB/s"
                if phase == "encode":
                    rate += f"  {tokens / seconds:,.0f} tokens/s"
            bar.update(tasks[phase], completed=done, rate=rate)

        try:
            manifest = prepare(args.sources, args.out, tokenizer=args.tokenizer,
                               train_vocab=args.vocab_size, byte_level=args.bytes,
                               options=opts, command=_command(args),
                               progress=progress, log=lambda m: c.print(f"[yellow]{m}[/]"))
        except (ValueError, FileNotFoundError, ImportError) as err:
            return _fail("prepare", err)
    seconds = time.perf_counter() - t0
    t = manifest["tokenizer"]
    c.print(f"[bold]{args.out}[/]: tokenizer {t['kind']} ({manifest['vocab_size']:,} ids, "
            f"end-of-text {t['end_of_text']}), {manifest['token_dtype']} shards")
    for name, s in manifest["splits"].items():
        c.print(f"  {name:<5} {s['documents']:>9,} documents  {s['bytes']:>14,} bytes  "
                f"{s['tokens']:>13,} tokens  {len(s['shards'])} shard(s)  "
                f"({s['bytes'] / max(s['tokens'], 1):.2f} bytes/token)")
    rule = manifest["split_rule"]
    if rule.get("kind") == "position":
        c.print(f"  split by position: the last {rule['val_tokens']:,} tokens "
                f"({rule['val_tokens'] // rule['window']} window(s) of --context "
                f"{rule['window'] - 1} + 1) are validation, since by document "
                f"(--val-fraction {rule['val_fraction']}) a split would hold no document")
    boms = sum(1 for s in manifest["sources"] if s.get("bom"))
    if boms:
        c.print(f"  {boms} file(s) began with a UTF-8 byte-order mark: the mark dropped (it is not "
                "text), the file read")
    skipped = manifest["skipped"]
    if skipped["files"] or skipped["records"]:
        c.print(f"  left out (not text, --skip-bad): {skipped['files']} file(s), "
                f"{skipped['records']} record(s)")
    total = sum(s["bytes"] for s in manifest["splits"].values())
    rate = "" if manifest["encode_seconds"] < 0.25 else \
        f"; tokenizing {total / 1e6 / manifest['encode_seconds']:,.1f} MB/s"
    c.print(f"  {seconds:.1f} s in all{rate}; manifest: {args.out / 'manifest.json'}")
    return 0


def _command(args: argparse.Namespace) -> list[str]:
    """The ``prepare`` command line that ``args`` stand for (recorded in the manifest)."""
    argv = ["jaxbasics", "prepare", *map(str, args.sources), "--out", str(args.out)]
    for name in ("jsonl_field", "encoding", "tokenizer", "vocab_size", "val_fraction",
                 "shard_tokens", "context"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name in ("glob", "exclude"):
        for pattern in getattr(args, name):
            argv += [f"--{name}", pattern]
    for flag in ("train_tokenizer", "bytes", "skip_bad"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    return argv


def _as_option(message: str) -> str:
    """PrepareOptions' field names as the CLI's options."""
    field, _, rest = message.partition(" ")
    return f"--{field.replace('_', '-')} {rest}" if field.isidentifier() else message


def cmd_eval(args: argparse.Namespace) -> int:
    """Load the model and the split, score it, print (or ``--json``) the result."""
    try:
        from jaxbasics.data.batches import TokenData

        data = TokenData.open(args.data, args.split)
        for name in ("stride", "context", "batch_size"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got "
                                 f"{value}")
        import numpy as np

        from jaxbasics.data.vocab import check_same_tokenizer, load_tokenizer

        if args.hf:
            from jaxbasics.gpt.hf import load_gpt2

            model_tok = load_tokenizer(args.hf, advice="without them nothing says which text "
                                       "its ids stand for, so its scores on --data cannot be "
                                       "judged; give the folder with its tokenizer files")
            model = load_gpt2(args.hf)
            what, flag = str(args.hf), f"--hf {args.hf}"
        else:
            from jaxbasics.gpt.runs import load_run

            model, model_tok = load_run(args.run)
            what, flag = str(args.run), f"--run {args.run}"
        if data.tokenizer is None:
            raise ValueError(f"--data {args.data} has no tokenizer: give a folder written by "
                             f"jaxbasics prepare")
        texts: list[str] = []
        if model_tok.digest() != data.tokenizer.digest():  # stored apart: compare on the data
            sample = data.read(np.zeros(1, np.int64), min(data.n, 1 << 16))[0]
            cuts = [-1, *np.flatnonzero(sample == data.tokenizer.eot_id).tolist(), len(sample)]
            texts = [t for a, b in zip(cuts, cuts[1:], strict=False)
                     if (t := data.tokenizer.decode(sample[a + 1: b]))]
        check_same_tokenizer(model_tok, data.tokenizer, model=flag, data=f"--data {args.data}",
                             texts=texts)
        from jaxbasics.gpt.evaluate import evaluate

        result = evaluate(model, data, context=args.context, stride=args.stride,
                          batch_size=args.batch_size)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return _fail("eval", err)
    out = {"model": what, "data": str(args.data), "split": args.split, **result.as_dict()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    bpb = "—" if result.bits_per_byte is None else f"{result.bits_per_byte:.4f}"
    print(f"{what} on {args.data} ({args.split}): {result.tokens:,} tokens in {result.windows:,} "
          f"window{'s' if result.windows != 1 else ''} of {result.context} (stride "
          f"{result.stride})\n"
          f"  loss {result.loss:.4f} nats/token   perplexity {result.perplexity:,.3f}   "
          f"bits per byte {bpb} ({result.bytes if result.bytes is not None else '—'} bytes)")
    return 0
