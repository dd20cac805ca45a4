"""Benchmarks: the FLOPs formula, timing helper, and the smoke suite end to end (CPU)."""

import json
import math
import os
import re

import numpy as np
import pytest
from helpers import jax_seen_on, simulated_devices

from jaxbasics.bench.device import peak_flops, table_peak_flops
from jaxbasics.bench.gpt2 import flops_per_token
from jaxbasics.bench.suites import run_suites
from jaxbasics.cli import main
from jaxbasics.gpt.config import GPT_CONFIG_124M
from jaxbasics.timing import measure, measure_interleaved


def test_flops_per_token_of_gpt2_124m():
    n = 163_009_536 - 1024 * 768 - 50257 * 768  # no position or token table: lookups
    assert flops_per_token(GPT_CONFIG_124M) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert flops_per_token(GPT_CONFIG_124M) == 855_000_576
    # at half the context only the attention term halves
    assert flops_per_token(GPT_CONFIG_124M, 512) == 6 * n + 12 * 12 * 12 * 64 * 512
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        flops_per_token(GPT_CONFIG_124M, 0)
    with pytest.raises(TypeError, match="cfg must be a GPTConfig, got str"):
        flops_per_token("gpt2")


def test_data_sheet_peaks_by_device_kind():
    # device_kind strings as JAX reports them; a v5e calls itself "TPU v5 lite", a v5p "TPU v5"
    assert table_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert table_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert table_peak_flops("NVIDIA H200") == 989e12
    assert table_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert table_peak_flops("NVIDIA L4") == 121e12
    assert table_peak_flops("TPU v4") == 275e12
    assert table_peak_flops("TPU v5 lite") == 197e12
    assert table_peak_flops("TPU v5") == 459e12
    assert table_peak_flops("TPU v6 lite") == 918e12
    assert table_peak_flops("cpu") is None
    assert table_peak_flops("NVIDIA GeForce RTX 4090") is None


def test_peak_on_cpu_is_a_matmul_measured_in_the_run():
    from jaxbasics.bench.device import peak_probe

    peak, source = peak_flops()
    assert source == "best fp32 matmul measured in this run"
    run, flops = peak_probe()  # timed again beside the variants, in every round
    assert flops == 2 * 1024**3 and run().shape == (1024, 1024)
    # between 1 GFLOP/s (any working CPU) and 100 TFLOP/s (none has it in fp32)
    assert 1e9 < peak < 1e14


def test_measure_reports_a_median_inside_its_range_and_checks_arguments():
    t = measure(lambda: sum(range(1000)), sync=lambda o: o, repeats=5)
    assert 0 < t.min_us <= t.median_us <= t.max_us and t.inner >= 1
    with pytest.raises(ValueError, match="warmup and repeats must be >= 1, got warmup=0"):
        measure(lambda: None, warmup=0)


def test_interleaved_timing_takes_turns_after_each_functions_warmup():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = measure_interleaved(fns, syncs=dict.fromkeys(fns, lambda o: o), warmup=2, repeats=4,
                                min_sample_s=0.0, settle_s=0.0)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["a", "b", "c"] * 4
    assert set(times) == {"a", "b", "c"} and all(t.repeats == 4 for t in times.values())
    with pytest.raises(ValueError, match="fns must name at least one function"):
        measure_interleaved({})
    with pytest.raises(ValueError, match="settle_s must be >= 0 seconds, got -1"):
        measure_interleaved(fns, settle_s=-1)


def test_interleaved_timing_settles_each_function_before_its_timed_sample():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    measure_interleaved(fns, syncs=dict.fromkeys(fns, lambda o: o), warmup=1, repeats=3,
                        min_sample_s=0.0, settle_s=1e-9)  # one untimed call, then the sample
    assert calls == ["a"] * 2 + ["b"] * 2 + ["a", "a", "b", "b"] * 3


def test_unknown_suite_and_size_are_refused():
    with pytest.raises(ValueError, match=r"unknown suite\(s\) \['bogus'\]"):
        run_suites(("bogus",), "smoke")
    with pytest.raises(ValueError, match="size must be one of smoke, cpu, full, got 'huge'"):
        run_suites(("gpt2",), "huge")


def test_library_calls_with_an_unknown_size_are_refused():
    from jaxbasics.bench.gpt2 import run_gpt2
    from jaxbasics.bench.gpt2_parts import run_gpt2_parts
    from jaxbasics.bench.scaling import run_scaling

    for fn in (run_gpt2, run_gpt2_parts, run_scaling):
        with pytest.raises(ValueError, match="size must be one of smoke, cpu, full, got 'tiny'"):
            fn("tiny")


@pytest.mark.slow
def test_smoke_suite_writes_json_and_plots(tmp_path, capsys, monkeypatch):
    """All suites at smoke size through the CLI, of the GPT-2 variants the one only the CPU
    runs, four updates a call, beside PyTorch (--variants; the others run on this CPU in
    test_accelerator_variant_set_rehearsed_on_cpu); the JSON file is also read each time it is
    rewritten during the run."""
    from jaxbasics.bench import suites

    out = tmp_path / "smoke.json"
    seen = []  # the file as it stood after each suite
    real = suites.run_suites

    def spy(*args, on_update=None, **kwargs):
        def update(result):
            on_update(result)
            seen.append(json.loads(out.read_text()))
        return real(*args, on_update=update, **kwargs)

    monkeypatch.setattr(suites, "run_suites", spy)
    assert main(["bench", "--size", "smoke", "--out", str(out), "--plot", str(tmp_path),
                 "--variants", "jax_fp32_remat_dots_loop4,torch_*"]) == 0
    r = json.loads(out.read_text())
    # written as the run went: a run cut short keeps the suites that finished
    assert [sorted(k for k in w if k != "meta") for w in seen] == [
        ["neuron"], ["neuron", "simplenet"], ["gpt2", "neuron", "simplenet"],
        ["gpt2", "gpt2_parts", "neuron", "simplenet"],
        ["gpt2", "gpt2_parts", "neuron", "scaling", "simplenet"]]
    assert not any(w["meta"]["complete"] for w in seen)
    assert r["meta"]["complete"] and r["gpt2"]["complete"] and seen[0]["neuron"] == r["neuron"]
    assert not list(tmp_path.glob("*.part"))  # written beside, then moved over the file
    assert r["meta"]["platform"] == "cpu" and r["meta"]["size"] == "smoke"
    for key in ("jax", "flax", "optax", "torch", "device_kind", "device_count", "date"):
        assert r["meta"][key]
    assert 1 <= r["meta"]["cpus_usable"] <= r["meta"]["cpus_total"]
    assert r["meta"]["float32_matmul"] == "float32"  # TF32 on GPUs, both sides
    for e in [r["neuron"], *r["simplenet"].values()]:
        assert e["torch_eager_us"] > 0 and e["jax_jit_us"] > 0 and e["jax_scan_us"] > 0
        assert e["speedup_jax_jit_vs_torch_eager"] == pytest.approx(
            e["torch_eager_us"] / e["jax_jit_us"])
    g = r["gpt2"]
    assert list(g["variants"]) == ["jax_fp32_remat_dots_loop4", "torch_eager_fp32"]
    loop = g["variants"]["jax_fp32_remat_dots_loop4"]
    # the peak: the best matmul seen, before the variants or in their timing rounds
    assert g["peak_flops"] == max(g["peak_flops_before"], *g["peak_flops_in_rounds"])
    assert len(g["peak_flops_in_rounds"]) == len(g["timing_groups"])
    for e in g["variants"].values():
        assert e["mfu_disturbed"] if e["mfu"] is None else 0 < e["mfu"] <= 1
    if loop["mfu"] is not None:
        assert loop["mfu"] == pytest.approx(loop["tokens_per_s"] * g["flops_per_token"]
                                            / g["peak_flops"])
    # same initial weights on both sides: the first losses agree
    assert loop["first_loss"] == pytest.approx(g["variants"]["torch_eager_fp32"]["first_loss"],
                                               rel=1e-5)
    for e in g["variants"].values():
        assert e["host_page_faults_per_step"] >= 0
    assert g["timing_groups"] == [list(g["variants"])]  # on CPU one group: all timed in turn
    # four updates per call: times and tokens/s are per update
    assert loop["steps_per_call"] == 4
    assert loop["tokens_per_s"] == pytest.approx(g["batch_size"] * g["seq_len"] / loop["step_ms"] * 1e3)
    # the step taken apart: each part computes the same value in both frameworks
    parts = r["gpt2_parts"]["parts"]
    assert set(parts) == {"blocks", "attention", "head_loss", "update"}
    for e in parts.values():
        assert e["jax_ms"] > 0 and e["torch_ms"] > 0
        assert e["jax_value"] == pytest.approx(e["torch_value"], rel=1e-5)
    assert parts["head_loss"]["jax_value"] == pytest.approx(math.log(512), rel=0.02)
    assert parts["attention"]["jax_value"] == pytest.approx(_attention_value_by_hand(), rel=1e-4)
    # attention's batched products: smoke size has 4 sequences x 4 heads, T=64, hd=16
    att = r["gpt2_parts"]["attention_matmuls"]
    assert [(e["product"], e["batch"], e["m_k_n"]) for e in att] == [
        ("q·kᵀ", 16, [64, 16, 64]), ("p·v", 16, [64, 64, 16]), ("pᵀ·g", 16, [64, 64, 16])]
    for e in att:
        assert e["rel_diff"] < 1e-5
        assert e["jax_gflops"] == pytest.approx(2 * 16 * math.prod(e["m_k_n"]) / e["jax_ms"] / 1e6)
    # the step's matmul kernels: 5 projections x 4 products, same numbers from both
    mm = r["gpt2_parts"]["matmuls"]
    assert len(mm) == 20 and {e["product"] for e in mm} == {
        "forward", "input_grad", "weight_grad", "weight_grad_transposed"}
    head = {e["product"]: e["m_k_n"] for e in mm if e["matmul"] == "head"}
    assert head == {"forward": [256, 64, 512], "input_grad": [256, 512, 64],  # 4x64 tokens,
                    "weight_grad": [64, 256, 512],  # d=64, vocab 512
                    "weight_grad_transposed": [64, 256, 512]}
    for e in mm:
        assert e["rel_diff"] < 1e-5
        assert e["jax_gflops"] == pytest.approx(2 * math.prod(e["m_k_n"]) / e["jax_ms"] / 1e6)
    # as the step runs them: 2 layers (block kernels twice, head once), and on CPU the
    # weight gradient transposed first (jaxbasics.gpt.matmul)
    step = r["gpt2_parts"]["matmuls_per_step"]
    assert set(step) == {"forward", "input_grad", "weight_grad_transposed", "all"}
    assert step["all"]["jax_ms"] == pytest.approx(
        sum(e["jax_ms"] * (1 if e["matmul"] == "head" else 2) for e in mm
            if e["product"] != "weight_grad"))
    assert step["all"]["torch_ms"] == pytest.approx(sum(
        step[p]["torch_ms"] for p in ("forward", "input_grad", "weight_grad_transposed")))
    assert (tmp_path / "step_time.png").stat().st_size > 10_000
    assert (tmp_path / "gpt2.png").stat().st_size > 10_000
    captured = capsys.readouterr()
    printed = captured.out
    assert "GPT-2 train step" in printed and "GPT-2 step taken apart" in printed
    assert "matmul kernels alone" in printed and "attention's batched products" in printed
    assert "page faults/step" in printed
    assert "· gpt2: compiling and running jax_fp32_remat_dots_loop4 once" in captured.err


def _attention_value_by_hand() -> float:
    """Σ causal_attention(q, k, v) ⊙ r for the gpt2-parts smoke inputs, in float64 numpy."""
    from jaxbasics.bench.gpt2 import SIZES
    from jaxbasics.bench.gpt2_parts import _inputs

    cfg, batch, _ = SIZES["smoke"]
    d = _inputs(cfg, batch)
    q, k, v, r = (d[name].astype(np.float64).transpose(0, 2, 1, 3)  # (B, H, T, hd)
                  for name in ("q", "k", "v", "r_att"))
    t = q.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return float(np.sum((weights @ v) * r))


def test_page_faults_per_step_counts_fresh_memory():
    from jaxbasics.bench.gpt2 import Prepared, page_faults_per_step

    def fresh():  # 64 MiB, above glibc's largest mmap threshold: new pages on every call
        return np.ones(1 << 24, np.float32)

    touch = page_faults_per_step(Prepared(fresh, lambda out: out, 0.0, {}), steps=3)
    idle = page_faults_per_step(Prepared(lambda: None, lambda out: out, 0.0, {}), steps=3)
    assert touch > idle + 16
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        page_faults_per_step(Prepared(fresh, lambda out: out, 0.0, {}), steps=0)


def test_an_out_or_plot_path_that_cannot_be_written_is_refused_before_anything_runs(
        tmp_path, monkeypatch, capsys):
    import jaxbasics.bench.suites as suites

    monkeypatch.setattr(suites, "run_suites", lambda *a, **k: pytest.fail("ran the suites"))
    blocker = tmp_path / "afile"
    blocker.write_text("")
    for args in (["--out", str(blocker / "x.json")], ["--plot", str(blocker)],
                 ["--out", str(tmp_path)]):
        assert main(["bench", "--size", "smoke", "--suite", "neuron", *args]) == 2
        err = capsys.readouterr().err
        assert f"jaxbasics bench: {args[0]} {args[1]}: cannot write there (" in err
        assert ("is a file, not a folder" in err) if "afile" in args[1] else ("it is a folder" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no probe file left


def test_unavailable_device_is_reported(capsys):
    assert main(["bench", "--device", "tpu", "--size", "smoke", "--suite", "gpt2"]) == 2
    assert "--device tpu: JAX sees no such device here (available: cpu)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gpu_rehearsal():
    """The smoke-size GPT-2 suite with the GPU's variant set, run on the CPU, and what
    ``on_group`` was given after each timing group but the last (as JSON saw it)."""
    from jaxbasics.bench.gpt2 import run_gpt2

    groups_seen = []
    g = run_gpt2("smoke", compile_torch=False, platform="gpu",
                 on_group=lambda r: groups_seen.append(json.loads(json.dumps(r))))
    return g, groups_seen


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_rehearsal")  # one worker computes the fixture
def test_accelerator_variant_set_rehearsed_on_cpu(gpu_rehearsal):
    """The GPU run's variants, run here: bf16 with remat and PyTorch bf16 autocast compute
    the step; cuDNN attention, absent on a CPU, is recorded with its error, not raised."""
    from jaxbasics.bench.gpt2 import run_gpt2

    g, groups_seen = gpu_rehearsal
    v = g["variants"]
    assert g["variant_set"] == "gpu" and g["complete"]
    # timed in two groups, each dtype beside its PyTorch baseline, one group's memory at a time
    assert g["timing_groups"] == [
        ["jax_fp32", "jax_fp32_remat_dots", "torch_eager_fp32"],
        ["jax_bf16", "jax_bf16_remat_dots", "jax_bf16_cudnn", "jax_bf16_loop4", "torch_eager_bf16"]]
    assert list(v) == [name for group in g["timing_groups"] for name in group]
    # after the first group, the result so far: its variants timed and compared, not complete
    (first,) = groups_seen
    assert not first["complete"] and list(first["variants"]) == g["timing_groups"][0]
    assert first["variants"]["jax_fp32"]["speedup_vs_torch_eager"] == pytest.approx(
        first["variants"]["torch_eager_fp32"]["step_ms"] / first["variants"]["jax_fp32"]["step_ms"])
    assert v["jax_bf16_cudnn"] == {"error": "RuntimeError: cuDNN is not detected."}
    # the same first step in both frameworks and both dtypes (bf16 rounds the activations:
    # 4e-6 relative here, at initialisation, where the logits are small)
    fp32 = v["jax_fp32"]["first_loss"]
    assert v["jax_fp32_remat_dots"]["first_loss"] == pytest.approx(fp32, rel=1e-6)
    assert v["torch_eager_fp32"]["first_loss"] == pytest.approx(fp32, rel=1e-5)
    for name in ("jax_bf16", "jax_bf16_remat_dots", "jax_bf16_loop4", "torch_eager_bf16"):
        assert v[name]["dtype"] == "bfloat16"
        assert v[name]["first_loss"] == pytest.approx(fp32, rel=1e-4)
        assert v[name]["first_loss"] != fp32  # it did run in bf16
        # bf16 variants are compared with PyTorch eager in bf16
        assert v[name]["speedup_vs_torch_eager"] == pytest.approx(
            v["torch_eager_bf16"]["step_ms"] / v[name]["step_ms"])
    with pytest.raises(ValueError, match="platform must be None, 'cpu', 'gpu' or 'tpu', got 'npu'"):
        run_gpt2("smoke", platform="npu")


def test_pytorch_is_timed_on_the_device_jax_runs_on(monkeypatch):
    """On a CPU both run on the CPU; where JAX runs on an accelerator PyTorch cannot use, the
    comparison is refused with both sides named instead of timing PyTorch on the host CPU."""
    from jaxbasics.compare import device

    assert device.torch_device() == "cpu"
    jax_seen_on(monkeypatch, "gpu", "NVIDIA H100 80GB HBM3")
    with pytest.raises(RuntimeError, match=r"JAX runs on gpu \(NVIDIA H100 80GB HBM3\) but PyTorch "
                       r"cannot \(torch.cuda.is_available\(\) is False: a CPU-only build"):
        device.torch_device()
    jax_seen_on(monkeypatch, "tpu", "TPU v5 lite")
    with pytest.raises(RuntimeError, match=r"JAX runs on tpu \(TPU v5 lite\) but PyTorch cannot "
                       r"\(PyTorch has no backend for it here\); to compare on the CPU instead: "
                       r"jaxbasics bench --device cpu"):
        device.torch_device()


def test_default_device_follows_jax_default_device():
    """``jaxbasics bench --device`` sets jax_default_device; what the benchmark reports and
    where it runs must follow it, not ``jax.devices()[0]`` (two simulated CPU devices)."""
    import subprocess
    import sys

    code = ("import jax\n"
            "from jaxbasics.timing import default_device\n"
            "assert default_device() == jax.devices()[0]\n"
            "with jax.default_device(jax.devices()[1]):\n"
            "    print(default_device().id)\n")
    env = simulated_devices(2, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_suites_that_need_pytorch_stop_before_running_where_it_cannot_follow_jax(monkeypatch,
                                                                                 capsys):
    jax_seen_on(monkeypatch, "gpu", "NVIDIA H100 PCIe")
    assert main(["bench", "--suite", "simplenet", "--size", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "JAX runs on gpu (NVIDIA H100 PCIe) but PyTorch cannot" in err
    assert "or run --suite gpt2 alone" in err and "simplenet: SGD step" not in err


def test_a_jax_variant_out_of_device_memory_is_recorded_and_other_failures_raised(monkeypatch):
    """Running out of device memory (GPT-2 124M on a smaller GPU) is the machine's limit and
    becomes that variant's entry; any other failure of a plain JAX variant is a bug: raised."""
    from jaxbasics.bench import gpt2

    real = gpt2.prepare

    def prepare(cfg, batch, v, failure):
        if v.name == "jax_fp32_remat_dots":
            raise failure
        return real(cfg, batch, v)

    oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 45.3GiB.")
    monkeypatch.setattr(gpt2, "prepare", lambda c, b, v: prepare(c, b, v, oom))
    g = gpt2.run_gpt2("smoke", torch_side=False, bf16=False,
                      only=["jax_fp32", "jax_fp32_remat_dots"])
    assert g["variants"]["jax_fp32_remat_dots"] == {"error": f"RuntimeError: {oom}"}
    assert g["variants"]["jax_fp32"]["step_ms"] > 0
    monkeypatch.setattr(gpt2, "prepare", lambda c, b, v: prepare(c, b, v, ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):
        gpt2.run_gpt2("smoke", torch_side=False, bf16=False, only=["jax_fp32_remat_dots"])


def test_running_out_of_device_memory_while_a_group_is_timed_goes_on_with_the_next(monkeypatch):
    """Each variant of the fp32 group ran once, then timing them in turn outgrew the device:
    the group's variants carry that error, and the bf16 group is still timed."""
    from jaxbasics.bench import gpt2

    real = gpt2.measure_interleaved

    def measure(fns, **kwargs):
        if "jax_fp32" in fns:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9GiB.")
        return real(fns, **kwargs)

    monkeypatch.setattr(gpt2, "measure_interleaved", measure)
    g = gpt2.run_gpt2("smoke", compile_torch=False, platform="gpu",
                      only=["jax_fp32", "torch_eager_fp32", "jax_bf16", "torch_eager_bf16"])
    v = g["variants"]
    for name in ("jax_fp32", "torch_eager_fp32"):
        assert v[name]["error"] == ("timing the group jax_fp32, torch_eager_fp32: RuntimeError: "
                                    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                                    "9GiB.")
        assert "step_ms" not in v[name] and v[name]["first_loss"] > 0  # it did run once
    assert v["jax_bf16"]["speedup_vs_torch_eager"] == pytest.approx(
        v["torch_eager_bf16"]["step_ms"] / v["jax_bf16"]["step_ms"])
    assert g["complete"]
    monkeypatch.setattr(gpt2, "measure_interleaved",
                        lambda fns, **kw: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):  # anything else is a fault: raised
        gpt2.run_gpt2("smoke", torch_side=False, bf16=False, only=["jax_fp32"])


def test_variants_are_chosen_by_name_pattern_and_a_pattern_matching_none_is_refused():
    from jaxbasics.bench.gpt2 import select_variants, variants

    gpu = variants("gpu")
    names = [v.name for v in select_variants(gpu, ["*bf16*"])]
    assert names == ["jax_bf16", "jax_bf16_remat_dots", "jax_bf16_cudnn", "jax_bf16_loop4",
                     "torch_eager_bf16", "torch_compile_bf16"]
    assert [v.name for v in select_variants(gpu, ["torch_eager_*", "jax_fp32"])] == [
        "jax_fp32", "torch_eager_fp32", "torch_eager_bf16"]  # the run's order, not the patterns'
    assert select_variants(gpu, None) == gpu
    with pytest.raises(ValueError, match=r"variants: 'jax_fp16\*' matches none of this run's "
                                         r"variants: jax_fp32, jax_fp32_remat_dots, "):
        select_variants(gpu, ["jax_fp32", "jax_fp16*"])
    for bad in ([], "jax_fp32"):  # a bare string would match letter by letter
        with pytest.raises(ValueError, match="variants must be a non-empty list of name patterns"):
            select_variants(gpu, bad)


def test_bad_variants_stop_the_run_before_anything_runs(capsys):
    assert main(["bench", "--suite", "all", "--size", "smoke", "--variants", "jax_fp64"]) == 2
    err = capsys.readouterr().err
    assert "'jax_fp64' matches none of this run's variants: jax_fp32," in err
    assert "neuron:" not in err  # refused before the first suite started
    assert main(["bench", "--suite", "neuron", "--size", "smoke", "--variants", "jax_*"]) == 2
    assert ("variants (--variants) choose among the gpt2 suite's variants, and the suites here "
            "are neuron" in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["bench", "--variants", " , "])
    assert "expected comma-separated name patterns, got ' , '" in capsys.readouterr().err


def _split_by_group(g, meta):
    """The rehearsal's gpt2 result as two runs' files would hold it, one timing group each."""
    files = []
    for group in g["timing_groups"]:
        part = {**g, "timing_groups": [group], "variants": {n: g["variants"][n] for n in group}}
        files.append({"meta": dict(meta), "gpt2": json.loads(json.dumps(part))})
    return files


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_rehearsal")  # one worker computes the fixture
def test_a_run_split_by_timing_group_is_joined_into_one(gpu_rehearsal, tmp_path):
    """Two files of one machine, one timing group each, give the suite as one run gives it;
    the plot script joins them (--merged writes the join) and draws the chart."""
    import subprocess
    import sys

    from jaxbasics.bench.device import device_info
    from jaxbasics.bench.results import merge_results

    g, _ = gpu_rehearsal
    meta = {**device_info(), "size": "smoke", "suites": ["gpt2"], "complete": True}
    first, second = _split_by_group(g, meta)
    merged = merge_results([first, second])
    assert merged["gpt2"]["variants"] == g["variants"]
    assert merged["gpt2"]["timing_groups"] == g["timing_groups"]
    assert merged["meta"]["suites"] == ["gpt2"] and merged["meta"]["complete"]
    assert merged["meta"]["merged_dates"] == [meta["date"], meta["date"]]
    assert first["gpt2"]["timing_groups"] == [g["timing_groups"][0]]  # inputs left as they were
    paths = []
    for i, r in enumerate((first, second)):
        paths.append(tmp_path / f"group{i}.json")
        paths[-1].write_text(json.dumps(r))
    done = subprocess.run([sys.executable, "benchmarks/plot.py", *map(str, paths), str(tmp_path),
                           "--merged", str(tmp_path / "all.json")], capture_output=True,
                          text=True, check=False, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "all.json").read_text())["gpt2"]["variants"] == g["variants"]
    assert (tmp_path / "gpt2.png").stat().st_size > 10_000


def test_an_mfu_above_100_percent_is_never_given_but_flagged_as_disturbed():
    """A peak measured once, on a busy moment (48 GFLOP/s), gave every variant 102-136 %."""
    from jaxbasics.bench.results import set_mfu

    g = {"peak_flops": 48e9, "peak_source": "best fp32 matmul measured in this run",
         "flops_per_token": 1e6, "variants": {"a": {"tokens_per_s": 24_000.0},
                                             "b": {"tokens_per_s": 60_000.0},
                                             "c": {"error": "MemoryError"}}}
    set_mfu(g)
    assert g["variants"]["a"] == {"tokens_per_s": 24_000.0, "mfu": 0.5}
    assert g["variants"]["b"] == {"tokens_per_s": 60_000.0, "mfu": None, "mfu_disturbed": True}
    assert g["disturbed"] == ("b ran faster than the peak of 48.0 GFLOP/s (best fp32 matmul "
                              "measured in this run): the machine was busy whenever the peak "
                              "was measured, so no MFU is given for them")
    g["peak_flops"] = 96e9  # a better peak seen in a later round: recomputed, flag gone
    set_mfu(g)
    assert g["variants"]["b"] == {"tokens_per_s": 60_000.0, "mfu": 0.625}
    assert "disturbed" not in g


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_rehearsal")  # one worker computes the fixture
def test_joined_runs_with_measured_peaks_report_mfu_against_the_first_runs_peak(gpu_rehearsal):
    """A peak measured in each run (here the CPU's matmul) differs between runs: the join puts
    every variant against the first run's peak and keeps each run's."""
    from jaxbasics.bench.device import device_info
    from jaxbasics.bench.results import merge_results

    g, _ = gpu_rehearsal
    first, second = _split_by_group(g, {**device_info(), "size": "smoke"})
    peak = g["peak_flops"]
    second["gpt2"]["peak_flops"] = 1.25 * peak  # as a run that measured a faster matmul has it
    for e in second["gpt2"]["variants"].values():
        if e.get("mfu") is not None:
            e["mfu"] /= 1.25
    before = json.dumps(second)
    merged = merge_results([first, second])["gpt2"]
    assert merged["peak_flops"] == peak and merged["peak_flops_of_runs"] == [peak, 1.25 * peak]
    for name, e in merged["variants"].items():
        if "tokens_per_s" in e:  # every variant's MFU against the first run's peak
            assert e["mfu"] == pytest.approx(e["tokens_per_s"] * g["flops_per_token"] / peak)
            assert e["mfu"] == pytest.approx(g["variants"][name]["mfu"])
    assert json.dumps(second) == before  # the inputs are left as they were


@pytest.mark.slow
@pytest.mark.xdist_group("gpu_rehearsal")  # one worker computes the fixture
def test_results_of_different_runs_are_not_joined(gpu_rehearsal):
    from jaxbasics.bench.results import merge_results

    g, _ = gpu_rehearsal
    meta = {"platform": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "device_count": 1,
            "size": "full", "jax": "0.11.2", "flax": "0.12.8", "optax": "0.2.8",
            "torch": "2.11.0", "date": "2026-11-23T10:00:00+00:00"}
    first, second = _split_by_group(g, meta)
    other = {**second, "meta": {**meta, "device_kind": "NVIDIA H200"}}
    with pytest.raises(ValueError, match="results 1 ran with device_kind='NVIDIA H200', results 0 "
                                         "with device_kind='NVIDIA H100 80GB HBM3': not the same"):
        merge_results([first, other])
    with pytest.raises(ValueError, match=r"gpt2 variant\(s\) jax_fp32, jax_fp32_remat_dots, "
                                         r"torch_eager_fp32 in more than one of the results"):
        merge_results([first, first])
    bigger = {**second, "gpt2": {**second["gpt2"], "batch_size": 8}}
    with pytest.raises(ValueError, match="gpt2 of results 1 has batch_size=8, the first gpt2 "
                                         "results batch_size=4: not the same benchmark"):
        merge_results([first, bigger])
    parts = {"meta": meta, "gpt2_parts": {"parts": {}}}
    with pytest.raises(ValueError, match="suite 'gpt2_parts' is in more than one of the results "
                                         "given \\(again in results 1\\)"):
        merge_results([parts, parts])
    with pytest.raises(ValueError, match="merge_results needs at least one results dict"):
        merge_results([])


def test_results_files_that_are_missing_or_not_results_are_named(tmp_path):
    import subprocess
    import sys

    from jaxbasics.bench.results import read_json

    meta = {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "size": "smoke",
            "jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8", "torch": None,
            "date": "2026-11-23T10:00:00+00:00"}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"meta": meta, "neuron": {}}))
    assert read_json(good) == {"meta": meta, "neuron": {}}
    cases = {"missing.json": (None, "missing.json: cannot read it (No such file or directory)"),
             "text.json": ("nope", "text.json is not a JSON file (Expecting value"),
             "list.json": ("[1]", "list.json must hold a JSON object, got list"),
             "other.json": ('{"a": 1}', "other.json is not a jaxbasics bench results file (its "
                                        "'meta' lacks platform, device_kind"),
             "old.json": (json.dumps({"meta": {k: v for k, v in meta.items() if k != "date"}}),
                          "old.json is not a jaxbasics bench results file (its 'meta' lacks date)")}
    for name, (text, fragment) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ValueError) as info:
            read_json(tmp_path / name)
        assert fragment in str(info.value)
    # the plot script says the same in one line, and names an output it cannot write
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for args, fragment in (([str(tmp_path / "text.json"), str(tmp_path)], "is not a JSON file"),
                           ([str(good), str(good)], f"cannot write {good}: File exists")):
        done = subprocess.run([sys.executable, "benchmarks/plot.py", *args], capture_output=True,
                              text=True, check=False, timeout=300, cwd=root)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "plot.py: error: " in done.stderr and fragment in done.stderr


def test_pretrain_suite_trains_both_frameworks_on_the_same_batches_from_the_same_weights():
    """bench --suite pretrain at smoke size (torch.compile left out: it costs a minute here):
    both sides start from the same weights on the same batches, so every loss of the run
    agrees to float32 rounding, the first to 1e-5; the timings hang together."""
    from jaxbasics.bench.pretrain import SIZES, run_pretrain

    out = run_pretrain("smoke", compile_torch=False, log=lambda m: None)
    steps = SIZES["smoke"]["steps"]
    jax_run, torch_run = out["runs"]["jax"][0], out["runs"]["torch_eager"][0]
    assert jax_run["steps"] == torch_run["steps"] == steps
    assert jax_run["calls"] == [2] * (steps // 2)  # K-update calls, as a long run makes
    assert len(jax_run["losses"]) == len(torch_run["losses"]) == steps
    assert jax_run["losses"][0] == pytest.approx(torch_run["losses"][0], rel=1e-5)
    # the same AdamW, clipping and warmup + cosine schedule: losses stay together
    np.testing.assert_allclose(jax_run["losses"], torch_run["losses"], rtol=1e-3)
    assert jax_run["losses"][0] == pytest.approx(math.log(out["config"]["vocab_size"]), rel=0.05)
    for side, s in out["summary"].items():
        assert 0 < s["first_step_s_cold"] < s["wall_s"], side
        assert s["device_peak_mib"] is None, side  # a CPU's memory is the RSS
        assert s["steady_step_ms"] > 0 and s["peak_rss_mib"] > 50, side
        assert s["mfu"] == pytest.approx(out["flops_per_token"] * s["tokens_per_s"]
                                         / out["peak_flops"])
    br = out["jax_breakdown_ms"]
    assert all(br[k] > 0 for k in ("batch_gather", "transfer", "device_compute"))
    assert sum(br.values()) == pytest.approx(out["summary"]["jax"]["steady_step_ms"])
    assert set(out["goals"]) == {"step_vs_torch_eager", "first_step_over_eager_s",
                                 "rss_vs_torch"}
    # one round: no run with a warm compile cache, and the goal says it compared cold starts
    assert out["summary"]["jax"]["first_step_s_warm"] is None
    assert out["goals"]["first_step_over_eager_s"]["cache"] == "cold"


def test_pretrain_goals_pair_each_round_and_the_summary_takes_medians():
    """Two rounds on a drifting host: round 2 slower on both sides. The step goals compare the
    runs of one round with each other (the median of the per-round ratios), the summary's step
    is each side's median (of two: their mean), RSS the largest, first steps cold and warm."""
    from jaxbasics.bench.pretrain import summarize

    def run(ms, first, rss, cache):
        return {"steady_step_ms": ms, "first_step_s": first, "wall_s": 10 * first,
                "peak_rss": rss * 2**20, "losses": [5.0], "compile_cache": cache,
                "breakdown_s": {"device_compute": ms / 2e3}}

    runs = {"jax": [run(300.0, 8.0, 900, "cold"), run(400.0, 4.0, 700, "warm")],
            "torch_eager": [run(330.0, 3.0, 800, "cold"), run(480.0, 3.5, 820, "warm")]}
    summary, br, goals = summarize(runs, tokens=1000, flops_per_token=1e6, peak=1e12)
    assert summary["jax"]["steady_step_ms"] == 350.0
    assert summary["jax"]["tokens_per_s"] == pytest.approx(1000 / 0.35)
    assert summary["jax"]["mfu"] == pytest.approx(1e6 * 1000 / 0.35 / 1e12)
    assert (summary["jax"]["first_step_s_cold"], summary["jax"]["first_step_s_warm"]) == (8.0, 4.0)
    assert summary["jax"]["peak_rss_mib"] == 900
    assert goals["step_vs_torch_eager"]["value"] == pytest.approx((330 / 300 + 480 / 400) / 2)
    assert goals["step_vs_torch_eager"]["met"] is False  # 1.15 < 1.2
    assert goals["first_step_over_eager_s"]["value"] == pytest.approx(0.5)  # 4.0 - 3.5
    assert goals["first_step_over_eager_s"]["met"] is True
    assert goals["rss_vs_torch"]["value"] == pytest.approx(900 / 820)
    assert br["device_compute"] == pytest.approx(175.0)
    assert br["host_rest"] == pytest.approx(175.0)
    assert summary["jax"]["device_peak_mib"] is None and "device_memory_vs_torch" not in goals
    # on an accelerator each run also reports its device's peak: the larger of each side's
    # rounds, and the memory goal on them
    for side, peaks in (("jax", (3000, 3100)), ("torch_eager", (2900, 2800))):
        for r, peak in zip(runs[side], peaks, strict=True):
            r["device_peak"] = peak * 2**20
    summary, _, goals = summarize(runs, tokens=1000, flops_per_token=1e6, peak=1e12)
    assert summary["jax"]["device_peak_mib"] == 3100
    assert goals["device_memory_vs_torch"] == {"value": pytest.approx(3100 / 2900), "goal": 1.1,
                                               "met": True}
    # a peak below what a side reached (measured on a busy host, or a kernel outrunning the
    # probe, as PyTorch's did a 2048² matmul on an H200): no MFU over 100 % is given
    summary, _, _ = summarize(runs, tokens=1000, flops_per_token=1e6, peak=2.7e9)
    assert summary["jax"]["mfu"] is None and summary["torch_eager"]["mfu"] == pytest.approx(
        1e6 * 1000 / 0.405 / 2.7e9)


def test_pretrain_suite_in_bf16_computes_in_bf16_on_both_sides():
    """``--bf16``: JAX as ``train --bf16`` (XLA attention off an NVIDIA GPU), PyTorch under
    autocast; from the same weights on the same batches the losses agree to bf16 rounding
    (and not to float32's: both sides did round), and the peak names its source."""
    from jaxbasics.bench.pretrain import run_pretrain

    out = run_pretrain("smoke", steps=4, compile_torch=False, bf16=True, log=lambda m: None)
    assert out["config"]["dtype"] == "bfloat16 compute, float32 parameters"
    # the smoke model (d=32) is narrow: layers unrolled on the CPU, every activation saved
    assert out["config"]["jax_attention"] == "xla" and out["config"]["jax_remat"] is False
    assert out["config"]["jax_scan_layers"] is False
    assert out["peak_source"] == "best fp32 matmul measured in this run"
    j, t = out["runs"]["jax"][0]["losses"], out["runs"]["torch_eager"][0]["losses"]
    np.testing.assert_allclose(j, t, rtol=2e-2)
    fp32 = math.log(out["config"]["vocab_size"])
    assert j[0] == pytest.approx(fp32, rel=0.05) and j[0] != t[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),  # was the size's 4
    ({"steps": 0}, "steps must be a positive integer, got 0"),
    ({"context": -1}, "context must be a positive integer, got -1"),
    ({"preset": "gpt5"}, "preset must be one of gpt2, gpt2-medium, gpt2-large, gpt2-xl, got 'gpt5'"),
    ({"steps": 1}, "steps must be at least 2 (the first one compiles, and a steady step is "
                   "measured after it), got 1"),
])
def test_pretrain_suite_refuses_bad_settings_before_preparing_anything(monkeypatch, kwargs,
                                                                       message):
    """A 0 was read as 'the size's' (``batch_size or 4``) and the run went on; a bad preset was
    named only after the corpus had been prepared."""
    from jaxbasics.bench import pretrain

    monkeypatch.setattr(pretrain, "make_data", lambda *a: pytest.fail("prepared a corpus"))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        pretrain.run_pretrain("smoke", compile_torch=False, log=lambda m: None, **kwargs)


def test_pretrain_options_without_the_pretrain_suite_are_refused():
    with pytest.raises(ValueError, match=r"--preset only apply to the pretrain suite \(suites "
                                         r"here: neuron\): add pretrain or leave them out"):
        run_suites(("neuron",), "smoke", pretrain={"preset": "gpt2"})


@pytest.mark.parametrize("argv, given", [
    ([], {}),
    (["--steps", "0", "--batch-size", "4"], {"steps": 0, "batch_size": 4}),  # 0 reaches the check
    (["--bf16", "--remat", "off"], {"bf16": True, "remat": False}),
    (["--remat", "dots", "--preset", "gpt2"], {"remat": "dots", "preset": "gpt2"}),
    (["--scan-layers", "on"], {"scan_layers": True}),
    (["--scan-layers", "off"], {"scan_layers": False}),
    (["--scan-layers", "auto"], {"scan_layers": "auto"}),
])
def test_the_pretrain_suites_options_reach_it_as_given(monkeypatch, argv, given):
    from jaxbasics.bench import suites

    seen = {}

    def run(suite_names, size, **kwargs):
        seen.update(kwargs["pretrain"])
        raise ValueError("stop")

    monkeypatch.setattr(suites, "run_suites", run)
    assert main(["bench", "--suite", "pretrain", "--size", "smoke", *argv]) == 2
    assert seen == given


def test_a_bad_remat_for_the_pretrain_suite_is_named_before_anything_is_prepared(monkeypatch):
    from jaxbasics.bench import pretrain

    monkeypatch.setattr(pretrain, "make_data", lambda *a: pytest.fail("prepared a corpus"))
    with pytest.raises(ValueError, match="remat must be False, True, 'full', 'dots'"):
        pretrain.run_pretrain("smoke", remat="sometimes", compile_torch=False, log=lambda m: None)
    with pytest.raises(ValueError, match="scan_layers must be True, False or 'auto', got 'no'"):
        pretrain.run_pretrain("smoke", scan_layers="no", compile_torch=False, log=lambda m: None)


def test_the_h200_pretraining_results_print_as_stored_and_with_device_memory(capsys):
    """The stored H200 run (benchmarks/results/nvidia-h200/pretrain.json) prints its figures;
    a run that measured its device's peak (runs since this date) gets that column and goal."""
    from jaxbasics.bench.pretrain import summarize
    from jaxbasics.cli.bench import print_tables

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "nvidia-h200",
                        "pretrain.json")
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    print_tables(result)
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "141.7" in out and "85.0" in out  # steady ms a step
    assert "data sheet, dense bf16" in out and "device peak MiB" not in out
    p = result["pretrain"]
    for side, mib in (("jax", 20_000), ("torch_eager", 16_000)):
        for r in p["runs"][side]:
            r["device_peak"] = mib * 2**20
    c = p["config"]
    p["summary"], p["jax_breakdown_ms"], p["goals"] = summarize(
        p["runs"], tokens=c["batch"] * c["context"], flops_per_token=p["flops_per_token"],
        peak=p["peak_flops"])
    print_tables(result)
    out = capsys.readouterr().out
    assert "device peak MiB" in out and "20,000" in out and "16,000" in out
    assert re.search(r"device memory vs torch\s*│\s*1\.25\s*│\s*≤ 1\.10\s*│\s*NOT met", out), out


def test_pretrain_rounds_interleave_and_pair_by_round(monkeypatch, capsys):
    """--rounds N runs every side N times, interleaved (JAX, eager, compiled, then again), the
    first round with cold caches; the step goals are the median of the rounds' own ratios;
    --rounds 0 is refused by its flag before anything is prepared."""
    from jaxbasics.bench import pretrain

    monkeypatch.setattr(pretrain, "make_data", lambda *a: pytest.fail("prepared a corpus"))
    assert main(["bench", "--suite", "pretrain", "--size", "smoke", "--rounds", "0"]) == 2
    assert "jaxbasics bench: --rounds must be a positive integer, got 0" in capsys.readouterr().err
    monkeypatch.undo()
    # steady ms a step by round: eager/JAX ratios 2.0, 1.0, 1.1 (median 1.1, mean 1.37)
    steady = {"jax": [100.0, 200.0, 100.0], "torch_eager": [200.0, 200.0, 110.0],
              "torch_compile": [50.0, 100.0, 300.0]}
    order = []

    def fake_launch(script, spec, env):
        side = "jax" if script is pretrain._JAX else (
            "torch_compile" if spec["compile"] else "torch_eager")
        r = sum(1 for s, _ in order if s == side)
        order.append((side, r))
        out = {"steady_step_ms": steady[side][r], "first_step_s": 5.0 - r, "wall_s": 9.0,
               "steps": 6, "losses": [5.5] * 6, "peak_rss": 100 * 2**20, "device_peak": None}
        if side == "jax":
            out.update(breakdown_s={"device_compute": 0.05}, attention="xla", remat="dots",
                       steps_per_call=2)
        return out

    monkeypatch.setattr(pretrain, "_launch", fake_launch)
    monkeypatch.setattr("jaxbasics.bench.device.peak_flops", lambda *a: (1e12, "test"))
    said = []
    out = pretrain.run_pretrain("smoke", rounds=3, log=said.append)
    assert "pretrain: round 3 of 3, torch_compile (6 steps)" in said  # not the size's 1
    sides = ["jax", "torch_eager", "torch_compile"]
    assert order == [(side, r) for r in range(3) for side in sides]
    assert out["config"]["rounds"] == 3
    assert [x["compile_cache"] for x in out["runs"]["jax"]] == ["cold", "warm", "warm"]
    g = out["goals"]
    assert g["step_vs_torch_eager"]["value"] == pytest.approx(1.1)
    assert g["step_vs_torch_compile"]["value"] == pytest.approx(0.5)  # 0.5, 0.5, 3.0
    assert g["first_step_over_eager_s"] == {"value": 0.0, "cache": "warm", "goal": 1.0,
                                            "met": True}
    from jaxbasics.cli.bench import print_tables

    print_tables({"meta": {"device_kind": "cpu", "device_count": 1, "platform": "cpu",
                           "size": "smoke", "jax": "x"}, "pretrain": out})
    assert "6 steps, 3 rounds (JAX 2 a call)" in capsys.readouterr().out


def test_results_name_the_cpu_model(tmp_path, capsys):
    """Every result's meta names the host's CPU model (Linux's cpuinfo; platform's answer
    where there is none), and the printed title shows it."""
    import platform

    from jaxbasics.bench.device import cpu_model, device_info
    from jaxbasics.cli.bench import print_tables

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    "model name\t: AMD EPYC 7B13 64-Core Processor\nflags\t: fpu\n")
    assert cpu_model(str(info)) == "AMD EPYC 7B13 64-Core Processor"
    fallback = platform.processor() or platform.machine()
    info.write_text("processor\t: 0\nCPU part\t: 0xd0c\n")  # no model line
    assert cpu_model(str(info)) == fallback
    assert cpu_model(str(tmp_path / "missing")) == fallback
    assert device_info()["cpu_model"] == cpu_model()
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "nvidia-h200",
                        "pretrain.json")
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    result["meta"]["cpu_model"] = "Test CPU 9000"
    print_tables(result)
    assert "host cores (Test CPU 9000)" in capsys.readouterr().out


def test_the_steady_step_never_includes_the_compiling_call_and_refusals_speak_flags(
        monkeypatch, capsys):
    """A run of 4 steps took its 'steady' step as the median of all four, the compiling call
    among them (4,278 ms against 2 a step, a new user found); short runs now leave out their
    first half. The command line names its own options in the refusals."""
    from jaxbasics.bench import pretrain
    from jaxbasics.bench.pretrain import WARM, warm_left_out

    assert [warm_left_out(n) for n in (2, 3, 4, 6, 15, 16, 60)] == [1, 1, 2, 3, 7, WARM, WARM]
    monkeypatch.setattr(pretrain, "make_data", lambda *a: pytest.fail("prepared a corpus"))
    assert main(["bench", "--suite", "pretrain", "--size", "smoke", "--steps", "0"]) == 2
    assert "jaxbasics bench: --steps must be a positive integer, got 0" in capsys.readouterr().err
