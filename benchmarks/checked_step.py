"""What a checked train step costs (``checked=True``: checkify's value checks compiled in, and
a wait for their result on every call) against the plain step, timed in turn on this machine:
the chapter's SimpleNet SGD step at batch 1 and 64, and a small GPT's AdamW step.

    python -m benchmarks.checked_step
"""

import jax
import optax
from flax import nnx

from jaxbasics.chapter import simplenet
from jaxbasics.chapter.train_step import make_train_step
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.model import parameter_table
from jaxbasics.gpt.train import TrainOptions, build_model, make_gpt_train_step, make_optimizer
from jaxbasics.params import split_params
from jaxbasics.timing import measure_interleaved


def _report(name: str, plain, checked, *args) -> None:
    t = measure_interleaved({"plain": lambda: plain(*args), "checked": lambda: checked(*args)},
                            repeats=15, min_sample_s=0.02)
    a, b = t["plain"].median_us, t["checked"].median_us
    print(f"{name}: plain {a:,.1f} µs, checked {b:,.1f} µs, +{b - a:,.1f} µs ({b / a:.2f}×)")


def main() -> None:
    for batch in (1, 64):
        graphdef, params = split_params(simplenet.SimpleNet(rngs=nnx.Rngs(0)))
        x, y = simplenet.toy_batch(jax.random.key(1), batch)
        tx = optax.sgd(0.01)
        state = tx.init(params)
        plain = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)
        checked = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False, checked=True,
                                  check_batch=simplenet.staged_batch_checks)
        _report(f"SimpleNet SGD step, batch {batch}", plain, checked, params, state, x, y)
    cfg = GPTConfig(vocab_size=256, context_length=16, emb_dim=128, n_heads=4, n_layers=4,
                    drop_rate=0.0)
    model = build_model(cfg, TrainOptions())
    graphdef, params = split_params(model)
    tx = make_optimizer(TrainOptions(steps=10), parameter_table(model))
    state = tx.init(params)
    x, y = AdditionTask(3).batch(0, 64)
    plain_gpt = make_gpt_train_step(graphdef, tx, donate=False)
    checked_gpt = make_gpt_train_step(graphdef, tx, donate=False, checked=True)
    _report("GPT (d=128, 4 layers, batch 64×12) AdamW step", plain_gpt, checked_gpt, params,
            state, x, y, None)


if __name__ == "__main__":
    main()
