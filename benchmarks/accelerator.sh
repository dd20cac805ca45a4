#!/usr/bin/env bash
# The accelerator runbook (docs/performance.md) as one script, for a lent machine's short lease.
#
#   bash benchmarks/accelerator.sh OUT_DIR [BUDGET_SECONDS]
#
# Runs, in order of worth, each step in its own process under a timeout cut from what is left
# of the budget (default 540 s), writing every result file into OUT_DIR as it goes (the suites
# write after each timing group, so a step stopped by its timeout still leaves its figures):
#   smoke.json       GPT-2 step, size smoke: the code runs on this device at all
#   gpt2-fp32.json   GPT-2 124M step, fp32 variants (torch.compile off)
#   gpt2-bf16.json   GPT-2 124M step, bf16 variants (torch.compile off)
#   pretrain.json    train --data beside a PyTorch loop, GPT-2 124M on 20 MB, 60 steps
#   pretrain-bf16.json  the same in bfloat16 compute (JAX with cuDNN attention, PyTorch autocast)
#   pretrain-bf16-remat.json  again with remat="dots" beside cuDNN's attention (train's "auto"
#                    leaves it off there until this is measured)
#   parts.json       the GPT-2 step's parts timed alone
# and log.txt with every step's output. DEVICE (gpu or tpu; cpu to rehearse) and SIZE (full;
# smoke to rehearse) come from the environment, and ONLY (names of steps, e.g. "pretrain
# parts") runs just those. Wheels in .whl/ (docs/performance.md, step 0)
# are installed into /tmp/site first; if the smoke step fails with them, the machine's own
# packages are tried instead.
set -u
out=${1:?usage: bash benchmarks/accelerator.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-540}
device=${DEVICE:-gpu}
size=${SIZE:-full}
mkdir -p "$out"
log="$out/log.txt"
start=$SECONDS
export PYTHONUNBUFFERED=1

say() { echo "== $* ($((SECONDS - start)) s)" | tee -a "$log"; }

# step NAME CAP_SECONDS ARGS...: one benchmark process, stopped at CAP or at what is left
step() {
    local name=$1 cap=$2; shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
    local left=$((budget - (SECONDS - start) - 10))
    if [ "$left" -lt 30 ]; then say "$name: skipped, ${left} s left"; return 1; fi
    [ "$cap" -gt "$left" ] && cap=$left
    say "$name: up to $cap s: python3 -m benchmarks $*"
    timeout "$cap" python3 -m benchmarks --device "$device" "$@" 2>&1 | tee -a "$log" | tail -40
    local rc=${PIPESTATUS[0]}
    say "$name: exit $rc"
    return "$rc"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
say "machine"
{ nvidia-smi -L 2>/dev/null; lscpu | grep -m1 "Model name"; python3 -c "
import importlib.metadata as m
print(', '.join(f'{p} {m.version(p)}' for p in ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'ml_dtypes', 'torch')))
import jax; print(jax.devices())"; } 2>&1 | tee -a "$log"

if ! step smoke 150 --suite gpt2 --size smoke --no-compile --out "$out/smoke.json"; then
    if [ -n "${PYTHONPATH:-}" ]; then
        say "smoke failed with the carried wheels: again with the machine's own packages"
        unset PYTHONPATH
        step smoke 120 --suite gpt2 --size smoke --no-compile --out "$out/smoke.json" || exit 1
    else
        exit 1
    fi
fi
step gpt2-fp32 150 --suite gpt2 --size "$size" --variants '*fp32*' --no-compile \
    --out "$out/gpt2-fp32.json"
step gpt2-bf16 170 --suite gpt2 --size "$size" --variants '*bf16*' --no-compile \
    --out "$out/gpt2-bf16.json"
step pretrain 200 --suite pretrain --size "$size" --steps 60 --no-compile \
    --out "$out/pretrain.json"
step pretrain-bf16 200 --suite pretrain --size "$size" --steps 60 --no-compile --bf16 \
    --out "$out/pretrain-bf16.json"
step pretrain-bf16-remat 200 --suite pretrain --size "$size" --steps 60 --no-compile --bf16 \
    --remat dots --out "$out/pretrain-bf16-remat.json"
step parts 120 --suite gpt2-parts --size "$size" --out "$out/parts.json"
say "done"
