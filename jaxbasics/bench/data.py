"""The data pipeline's benchmark (``bench --suite data``), three goals of issue 25:

* ``prepare``'s throughput (MB of text per second, reading, checking, digesting, tokenizing and
  writing shards) beside the ``tokenizers`` library's own ``encode_batch_fast`` on the same
  texts, already in memory, in one call, in the same run: goal >= 0.8x;
* ``prepare``'s peak resident memory (of a fresh process: Linux's ``VmHWM``, since ``ru_maxrss``
  keeps the size of the parent the process was forked from) on a corpus and on one ten times
  larger: goal within 1.2x;
* assembling a training batch from the memory-mapped shards as a share of the GPT-2 train step
  of the same size (:data:`jaxbasics.bench.gpt2.SIZES`, remat "dots"): goal < 2 %.

The corpus is the Python standard library's own ``.py`` source (``sysconfig``'s stdlib path,
site-packages left out), the first files in name order up to the size's budget; the larger
corpus is ten copies of it. The tokenizer is a byte-level BPE trained on it first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: size -> (corpus bytes, BPE vocabulary, timing repeats)
SIZES: dict[str, tuple[int, int, int]] = {"smoke": (300_000, 512, 1), "cpu": (4_000_000, 4096, 3),
                                          "full": (20_000_000, 8192, 3)}
#: a fifth of the documents for validation: the smoke corpus has only a dozen files
VAL_FRACTION = 0.2
GOALS = {"throughput_vs_encode_batch": 0.8, "peak_rss_10x_ratio": 1.2, "batch_share_of_step": 0.02}

_RSS = """
import json, resource, sys
from jaxbasics.data.prepare import PrepareOptions, prepare

def peak():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's size)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

before = peak()
prepare([sys.argv[1]], sys.argv[2], tokenizer=sys.argv[3], log=lambda m: None,
        options=PrepareOptions(val_fraction=float(sys.argv[4]), context=128))
print(json.dumps([before, peak(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))
"""


def stdlib_corpus(folder: Path, budget: int) -> int:
    """Copy the standard library's ``.py`` files (name order, site-packages left out) into
    ``folder`` until ``budget`` bytes; returns the bytes copied."""
    root = Path(sysconfig.get_path("stdlib"))
    total = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "site-packages" in rel.parts or total >= budget:
            continue
        try:
            path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):  # a few test files are Latin-1 on purpose
            continue
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += path.stat().st_size
    return total


def _peak_rss(corpus: Path, out: Path, tokenizer: Path) -> tuple[int, int]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _RSS, str(corpus), str(out), str(tokenizer),
                           str(VAL_FRACTION)],
                          capture_output=True, text=True, env=env, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"prepare in a subprocess failed: {done.stderr[-500:]}")
    before, after, _ = json.loads(done.stdout.strip().splitlines()[-1])
    return int(before), int(after)


def run_data(size: str, *, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Measure the three figures of the module docstring at ``size`` (:data:`SIZES`); returns a
    JSON-ready dict with each figure, its goal and whether it is met."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    budget, vocab, repeats = SIZES[size]
    from jaxbasics.data.batches import TokenData
    from jaxbasics.data.prepare import PrepareOptions, prepare
    from jaxbasics.data.sources import find_files
    from jaxbasics.data.vocab import train_bpe

    work = Path(tempfile.mkdtemp(prefix="jaxbasics-bench-data-"))
    try:
        small = work / "corpus"
        nbytes = stdlib_corpus(small, budget)
        files = [f.path for f in find_files([small])]
        texts = [p.read_text(encoding="utf-8") for p in files]
        log(f"data: corpus of {len(files)} stdlib files, {nbytes / 1e6:.1f} MB; training a BPE "
            f"of {vocab} ids")
        tok = train_bpe(iter(texts), vocab)
        tok.save(work / "tokenizer")
        large = work / "corpus10"
        for i in range(10):
            shutil.copytree(small, large / f"copy{i}")

        ours, theirs = [], []
        for r in range(repeats):  # interleaved: both see the same machine
            log(f"data: prepare vs encode_batch_fast, round {r + 1} of {repeats}")
            start = time.perf_counter()
            tok.tok.encode_batch_fast(texts, add_special_tokens=False)
            theirs.append(time.perf_counter() - start)
            out = work / f"data{r}"
            start = time.perf_counter()
            manifest = prepare([small], out, tokenizer=work / "tokenizer", log=lambda m: None,
                               options=PrepareOptions(val_fraction=VAL_FRACTION, context=128))
            ours.append(time.perf_counter() - start)
        text_bytes = sum(s["bytes"] for s in manifest["splits"].values())
        tokens = sum(s["tokens"] for s in manifest["splits"].values())
        prepare_mbs, encode_mbs = text_bytes / min(ours) / 1e6, text_bytes / min(theirs) / 1e6

        log("data: peak resident memory of prepare, corpus and 10x corpus (subprocesses)")
        base_small, peak_small = _peak_rss(small, work / "rss1", work / "tokenizer")
        base_large, peak_large = _peak_rss(large, work / "rss10", work / "tokenizer")

        from jaxbasics.bench.gpt2 import size_setting, time_jax_step

        cfg, batch, step_repeats = size_setting(size)
        context = cfg.context_length
        data = TokenData.open(work / "data0", "train")
        steps = 200
        data.batch(0, batch, context)  # first touch of the pages
        start = time.perf_counter()
        for step in range(1, steps + 1):
            data.batch(step, batch, context)
        batch_us = (time.perf_counter() - start) / steps * 1e6
        log(f"data: the {size}-size GPT-2 step ({batch}×{context}, remat dots) for comparison")
        step_us = time_jax_step(cfg.replace(vocab_size=max(cfg.vocab_size, tok.vocab_size)),
                                batch, remat="dots", repeats=step_repeats)["median_us"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    throughput = prepare_mbs / encode_mbs
    rss_ratio = peak_large / peak_small
    share = batch_us / step_us
    return {
        "corpus": {"files": len(files), "bytes": text_bytes, "tokens": tokens,
                   "source": "the Python standard library's .py files (name order)",
                   "vocab_size": tok.vocab_size, "tokenizers_threads":
                       os.environ.get("RAYON_NUM_THREADS", f"all ({os.cpu_count()} cpus)")},
        "throughput": {"prepare_mb_s": prepare_mbs, "encode_batch_fast_mb_s": encode_mbs,
                       "ratio": throughput, "goal": GOALS["throughput_vs_encode_batch"],
                       "met": throughput >= GOALS["throughput_vs_encode_batch"],
                       "prepare_s": ours, "encode_batch_fast_s": theirs},
        "peak_rss": {"corpus_bytes": text_bytes, "corpus_peak_bytes": peak_small,
                     "corpus10_peak_bytes": peak_large,
                     "after_imports_bytes": [base_small, base_large],
                     "ratio": rss_ratio, "goal": GOALS["peak_rss_10x_ratio"],
                     "met": rss_ratio <= GOALS["peak_rss_10x_ratio"]},
        "batch": {"batch_size": batch, "context": context, "batch_us": batch_us,
                  "step_us": step_us, "share": share, "goal": GOALS["batch_share_of_step"],
                  "met": share < GOALS["batch_share_of_step"],
                  "batch_timing": f"mean of {steps} batches (time.perf_counter)"},
        "complete": True,
    }


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(figure, value, goal, met)`` rows of a :func:`run_data` result, for a table."""
    t, r, b = result["throughput"], result["peak_rss"], result["batch"]
    yes = {True: "met", False: "not met"}
    return [
        ("prepare throughput vs encode_batch_fast",
         f"{t['prepare_mb_s']:.2f} vs {t['encode_batch_fast_mb_s']:.2f} MB/s = {t['ratio']:.2f}x",
         f">= {t['goal']}x", yes[t["met"]]),
        ("prepare peak RSS, 10x corpus vs corpus",
         f"{r['corpus10_peak_bytes'] / 2**20:.0f} vs {r['corpus_peak_bytes'] / 2**20:.0f} MiB = "
         f"{r['ratio']:.2f}x", f"<= {r['goal']}x", yes[r["met"]]),
        ("batch assembly vs GPT-2 step",
         f"{b['batch_us']:.0f} µs vs {b['step_us'] / 1e3:.0f} ms = {b['share']:.3%}",
         f"< {b['goal']:.0%}", yes[b["met"]]),
    ]
