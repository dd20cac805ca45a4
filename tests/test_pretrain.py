"""Training on a prepared corpus (train(PretrainData); the CLI's `train --data`, `generate`
and `eval` of a run are tests/test_readme.py's pretraining commands): windows of the shards,
evaluation on fixed validation windows (loss, perplexity, bits per byte) checked against an independent
computation, metrics.jsonl and TensorBoard events read back with TensorBoard's own reader, a
resumed run equal to an uninterrupted one, the tokenizer travelling into the run."""

import json
import math

import chex
import numpy as np
import optax
import pytest

from jaxbasics.data.prepare import PrepareOptions, prepare
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import PretrainData
from jaxbasics.gpt.metrics import TIMING
from jaxbasics.gpt.train import Evaluation, TrainOptions, train

CFG = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=2, n_layers=1,
                drop_rate=0.0)
OPTS = TrainOptions(steps=6, batch_size=4, warmup_steps=1, save_every=3)
DOCS = ["Der schnelle braune Fuchs springt über den faulen Hund. " * 3,
        "El veloz murciélago hindú comía feliz cardillo y kiwi. " * 3,
        "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 2,
        "The quick brown fox jumps over the lazy dog; 1234567890. " * 3,
        "いろはにほへと ちりぬるを わかよたれそ つねならむ " * 3] * 4
pytestmark = pytest.mark.xdist_group("pretrain")  # one worker shares the prepared corpus


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i, text in enumerate(DOCS):
        (root / f"doc{i:02d}.txt").write_text(f"{i}: {text}", encoding="utf-8")
    out = root.parent / "data"
    prepare([root], out, train_vocab=300, options=PrepareOptions(val_fraction=0.3, context=16),
            log=lambda _msg: None)
    return out


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE writes byte b as one character: itself for the printable Latin-1
    bytes, chr(256 + k) for the k-th of the others (the scheme of GPT-2's encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in keep]
    return {**{chr(b): b for b in keep}, **{chr(256 + k): b for k, b in enumerate(others)}}


def _val_reference(model, data: PretrainData, batches: int, batch_size: int):
    """Validation loss and bits per byte computed apart from the library: optax's cross-entropy
    of the model's logits over the same fixed windows (spread evenly, first and last window
    included), the bytes of each label from its token's byte-level spelling (end-of-text: 0)."""
    nll, count, nbytes = 0.0, 0, 0
    starts = np.linspace(0, data.val.n - 17, batches * batch_size).round().astype(int)
    tokens = np.concatenate([np.asarray(s.tokens) for s in data.val.shards]).astype(np.int32)
    alphabet = _byte_level_alphabet()
    spelled = {i: t for t, i in data.tokenizer.tok.get_vocab(with_added_tokens=True).items()}
    for s in starts:
        x, y = tokens[s:s + 16], tokens[s + 1:s + 17]
        logits = model(x[None])[0]
        nll += float(optax.softmax_cross_entropy_with_integer_labels(logits, y).sum())
        count += 16
        nbytes += sum(0 if int(t) == data.tokenizer.eot_id
                      else len(bytes(alphabet[c] for c in spelled[int(t)])) for t in y)
    return nll / count, nll / math.log(2) / nbytes


@pytest.mark.slow
def test_training_on_a_prepared_corpus_evaluates_logs_and_resumes_exactly(data_dir, tmp_path):
    data = PretrainData(data_dir, 16, seed=3)
    assert data.vocab_size == 300 and data.val is not None
    evaluation = Evaluation(every=3, batches=2, sample_prompt="The ", sample_tokens=5)
    whole = train(CFG, data, OPTS, run_dir=tmp_path / "whole", evaluation=evaluation)
    evals = [r for r in whole.history if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    loss, bpb = _val_reference(whole.model, data, 2, OPTS.batch_size)
    assert evals[-1]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert evals[-1]["val_ppl"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert evals[-1]["val_bpb"] == pytest.approx(bpb, rel=1e-5)
    assert isinstance(evals[-1]["sample"], str) and evals[-1]["sample"]
    # the run holds the data's tokenizer, and its metrics as JSON lines and TensorBoard events
    assert (tmp_path / "whole" / "tokenizer" / "tokenizer.json").is_file()
    lines = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(whole.history))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "whole" / "events"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 7))
    np.testing.assert_allclose([e.value for e in events.Scalars("train/loss")],
                               [r["loss"] for r in whole.history], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("val/bits_per_byte")],
                               [r["val_bpb"] for r in evals], rtol=1e-6)
    # stopped after 3 steps, resumed: the parameters and history of the uninterrupted run
    train(CFG, data, OPTS, run_dir=tmp_path / "part", stop_after=2, evaluation=evaluation)
    resumed = train(CFG, data, OPTS, run_dir=tmp_path / "part", resume=True,
                    evaluation=evaluation)
    chex.assert_trees_all_equal(resumed.params, whole.params)

    def timeless(history):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in history]

    # the same records, evaluations and samples included (none at the step it stopped at)
    assert timeless(resumed.history) == timeless(whole.history)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 7))
    # the same corpus prepared with another tokenizer (bytes: 257 ids, within the model's 300)
    # cannot continue the run: the run records its tokenizer's digest
    other = tmp_path / "bytes"
    prepare([next(data_dir.parent.glob("corpus*"))], other, byte_level=True,
            options=PrepareOptions(val_fraction=0.3, context=16), log=lambda _msg: None)
    with pytest.raises(ValueError, match=r"cannot resume .*tokenizer: '[0-9a-f]{64}' there, "
                                         r"'[0-9a-f]{64}' here"):
        train(CFG, PretrainData(other, 16, seed=3), OPTS, run_dir=tmp_path / "part", resume=True)


def test_a_corpus_without_a_validation_split_cannot_be_evaluated(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.txt").write_text("abcdefgh " * 20)
    prepare([root], tmp_path / "d", byte_level=True, options=PrepareOptions(val_fraction=0.0),
            log=lambda _m: None)
    data = PretrainData(tmp_path / "d", 16)
    assert data.val is None and data.vocab_size == 257
    x, y = data.batch(0, 4)
    assert x.shape == y.shape == (4, 16)
    with pytest.raises(ValueError, match="evaluation needs data with a validation split"):
        train(CFG.replace(vocab_size=257), data, OPTS, evaluation=Evaluation())


def test_nanogpt_token_files_train_with_their_vocabulary_size(tmp_path):
    """train.bin/val.bin as nanoGPT's prepare.py writes them (headerless uint16): read with
    the vocabulary size given, windows from train.bin, validation from val.bin; without a size
    they are refused by name."""
    rng = np.random.default_rng(0)
    tokens = {"train": rng.integers(0, 300, 500), "val": rng.integers(0, 300, 100)}
    for split, ids in tokens.items():
        ids.astype(np.uint16).tofile(tmp_path / f"{split}.bin")
    data = PretrainData(tmp_path, 16, vocab_size=300)
    assert data.vocab_size == 300 and data.tokenizer is None and data.val.n == 100
    x, y = data.batch(3, 4)
    starts = data.train.batch_starts(3, 4, 16)
    np.testing.assert_array_equal(x, np.stack([tokens["train"][s:s + 16] for s in starts]))
    np.testing.assert_array_equal(y, np.stack([tokens["train"][s + 1:s + 17] for s in starts]))
    with pytest.raises(ValueError, match="raw token files do not record their vocabulary size"):
        PretrainData(tmp_path, 16)
