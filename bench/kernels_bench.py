"""Benchmark the fused kernels against their chunked torch references and the naive full-logits path.

    python bench/kernels_bench.py                 # CPU: reference vs naive (Triton needs CUDA)
    python bench/kernels_bench.py --device cuda   # GPU: Triton vs reference vs naive
    python bench/kernels_bench.py --device cuda --liger   # + Liger-Kernel's GRPO shape

Times are medians (CUDA: triton.testing.do_bench with events; CPU: perf_counter over a few reps).
Peak memory is what the op allocates on top of its inputs: on CUDA max_memory_allocated after a
reset; on CPU the peak RSS growth of a fresh subprocess (ru_maxrss), one per measurement.
Results go to bench/results/kernels_<device>.json and .md (docs/benchmarks.md and docs/kernels.md quote them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "kernels")]

from minirft_kernels import grpo_token_loss, label_head_probs, selective_logprobs  # noqa: E402
from minirft_kernels.ops.grpo_loss import grpo_token_loss_naive  # noqa: E402
from minirft_kernels.ops.label_head import label_head_probs_naive  # noqa: E402
from minirft_kernels.ops.selective_logprobs import selective_logprobs_naive  # noqa: E402

MB = 1 << 20

# (name, V, H): the two vocabularies named in the issue, with a hidden size of a model that has it.
MODELS = {
    "cpu": [("smollm2-135m", 49152, 576), ("qwen2.5-0.5b", 151936, 896)],
    "cuda": [("smollm2-1.7b", 49152, 2048), ("qwen2.5-1.5b", 151936, 1536)],
}
ROWS = {"cpu": [64, 256, 1024], "cuda": [2048, 8192, 16384]}  # B x T positions
GRPO_SHAPES = {"cpu": [(8, 512), (16, 1024)], "cuda": [(16, 1024), (64, 2048)]}
JUDGE_ROWS = {"cpu": [64, 512], "cuda": [512, 4096]}


# ------------------------------------------------------------------------------------ workloads
def _setup(spec: dict, device: str):
    """Build inputs for one measurement; return a zero-argument function running it."""
    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    kind, variant = spec["kind"], spec["variant"]
    backend = "reference" if variant == "reference" else "triton"
    if kind == "logprobs":
        rows, v, h = spec["rows"], spec["V"], spec["H"]
        hidden = torch.randn(rows, h, device=device, dtype=dtype, requires_grad=True)
        weight = (torch.randn(v, h, device=device) * h**-0.5).to(dtype)
        targets = torch.randint(0, v, (rows,), device=device)
        g = torch.randn(rows, device=device)

        def run():
            if variant == "naive":
                lp = selective_logprobs_naive(hidden, weight, targets)
            else:
                lp = selective_logprobs(hidden, weight, targets, backend=backend)
            (lp * g).sum().backward()
            hidden.grad = None

        return run
    if kind == "grpo":
        b, t = spec["B"], spec["T"]
        logp = (torch.randn(b, t, device=device) * 0.5 - 2).requires_grad_()
        old = logp.detach() + 0.1 * torch.randn(b, t, device=device)
        ref = logp.detach() + 0.1 * torch.randn(b, t, device=device)
        adv = torch.randn(b, device=device)
        mask = (torch.rand(b, t, device=device) > 0.2).float()

        def run():
            if variant == "naive":
                loss, _ = grpo_token_loss_naive(logp, old, ref, adv, mask, 0.2, 0.04)
            else:
                loss, _ = grpo_token_loss(logp, old, ref, adv, mask, 0.2, 0.04, backend=backend)
            loss.backward()
            logp.grad = None

        return run
    if kind == "judge":
        n, v, h = spec["rows"], spec["V"], spec["H"]
        hidden = torch.randn(n, h, device=device, dtype=dtype)
        lm_head = (torch.randn(v, h, device=device) * h**-0.5).to(dtype)
        ids = torch.tensor([9, 10, 11, 12], device=device)
        cls = torch.tensor([1, 1, 0, 0], device=device)
        label_w = lm_head[ids].contiguous()

        @torch.no_grad()
        def run():
            if variant == "naive":
                return label_head_probs_naive(hidden, lm_head, ids, cls, 2)
            return label_head_probs(hidden, label_w, cls, 2, backend=backend)

        return run
    if kind == "liger":
        return _liger_setup(spec, device, dtype)
    raise ValueError(kind)


def _liger_setup(spec, device, dtype):
    """Liger-Kernel's fused linear GRPO benchmark shape: policy + reference log-probs, loss, backward
    w.r.t. hidden *and* the lm_head weight (as Liger's), one optimiser step per batch (old = logp)."""
    b, t, h, v = spec["B"], spec["T"], spec["H"], spec["V"]
    hidden = torch.randn(b * t, h, device=device, dtype=dtype, requires_grad=True)
    ref_hidden = torch.randn(b * t, h, device=device, dtype=dtype)
    weight = (torch.randn(v, h, device=device) * h**-0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (b * t,), device=device)
    adv = torch.randn(b, device=device)
    mask = torch.ones(b, t, device=device)
    variant = spec["variant"]

    def run():
        if variant == "naive":
            logp = selective_logprobs_naive(hidden, weight, targets).view(b, t)
            with torch.no_grad():
                ref = selective_logprobs_naive(ref_hidden, weight, targets).view(b, t)
            loss, _ = grpo_token_loss_naive(logp, logp.detach(), ref, adv, mask, 0.2, 0.04)
        else:
            be = "reference" if variant == "reference" else "triton"
            logp = selective_logprobs(hidden, weight, targets, backend=be).view(b, t)
            with torch.no_grad():
                ref = selective_logprobs(ref_hidden, weight, targets, backend=be).view(b, t)
            loss, _ = grpo_token_loss(logp, logp.detach(), ref, adv, mask, 0.2, 0.04, backend=be)
        loss.backward()
        out = (loss.item(), hidden.grad.float().norm().item())
        hidden.grad = None
        weight.grad = None
        return out

    return run


# ---------------------------------------------------------------------------------- measuring
def measure_cuda(spec: dict) -> dict:
    import triton

    try:
        run = _setup(spec, "cuda")
        run()  # compile / warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        ms = triton.testing.do_bench(run, warmup=spec.get("warmup", 25), rep=spec.get("rep", 100),
                                     return_mode="median")
        out = {"ms": ms, "peak_extra_mb": (peak - base) / MB, "peak_total_mb": peak / MB}
        if spec["kind"] == "liger":
            out["loss"], out["grad_hidden_norm"] = result
        return out
    except torch.OutOfMemoryError:
        return {"ms": None, "peak_extra_mb": None, "error": "out of memory"}
    finally:
        run = None
        torch.cuda.empty_cache()


def _vm_hwm_kb() -> float:
    """Peak resident set size of this process (kB), since start or the last reset."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS (so input setup is not counted)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_cpu_child(spec: dict) -> dict:
    """Runs inside a fresh process: time a few reps, then read the peak RSS growth over the inputs."""
    import gc

    torch.set_num_threads(spec["threads"])
    run = _setup(spec, "cpu")
    run()  # warm up (allocator pools, lazy inits) before the baseline
    gc.collect()
    _reset_peak_rss()
    base_kb = _vm_hwm_kb()
    times = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    return {"ms": statistics.median(times), "peak_extra_mb": max(0.0, _vm_hwm_kb() - base_kb) / 1024}


def measure_cpu(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"ms": None, "peak_extra_mb": None, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- driver
def plan(device: str, liger: bool, quick: bool) -> list[dict]:
    variants = ["triton", "reference", "naive"] if device == "cuda" else ["reference", "naive"]
    dtype = "bfloat16" if device == "cuda" else "float32"
    specs = []
    rows = ROWS[device][:1] if quick else ROWS[device]
    for name, v, h in MODELS[device]:
        for r in rows:
            for var in variants:
                specs.append(dict(kind="logprobs", model=name, V=v, H=h, rows=r, dtype=dtype, variant=var))
    for b, t in GRPO_SHAPES[device]:
        for var in variants:
            specs.append(dict(kind="grpo", B=b, T=t, dtype="float32", variant=var))
    for name, v, h in MODELS[device]:
        for n in JUDGE_ROWS[device]:
            for var in variants:
                specs.append(dict(kind="judge", model=name, V=v, H=h, rows=n, dtype=dtype, variant=var))
    if liger and device == "cuda":
        for var in ["triton", "reference", "naive"]:
            specs.append(dict(kind="liger", B=16, T=1024, H=4096, V=128256, dtype="bfloat16",
                              variant=var, warmup=5, rep=20))
    return specs


def label(spec: dict) -> str:
    k = spec["kind"]
    if k == "logprobs":
        return f"logprobs {spec['model']} V={spec['V']} H={spec['H']} BxT={spec['rows']} {spec['dtype']}"
    if k == "grpo":
        return f"grpo loss B={spec['B']} T={spec['T']}"
    if k == "judge":
        return f"judge head {spec['model']} V={spec['V']} H={spec['H']} N={spec['rows']} {spec['dtype']}"
    return f"liger shape B={spec['B']} T={spec['T']} H={spec['H']} V={spec['V']} {spec['dtype']}"


def _fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def table(results: list[dict]) -> str:
    lines = ["| case | variant | median ms | peak MB over inputs |", "|---|---|---:|---:|"]
    for r in results:
        extra = r.get("error") or ""
        lines.append(f"| {label(r['spec'])} | {r['spec']['variant']} | {_fmt(r['ms'])} | "
                     f"{_fmt(r['peak_extra_mb'], 0)}{' ' + str(extra) if extra else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--liger", action="store_true", help="add Liger's B=16 T=1024 H=4096 V=128k shape (CUDA)")
    ap.add_argument("--quick", action="store_true", help="smallest B x T only")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per measurement")
    ap.add_argument("--reps", type=int, default=3, help="CPU repetitions (median)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_cpu_child(json.loads(args.child))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    os.environ.setdefault("TRITON_INTERPRET", "0")
    results = []
    for spec in plan(args.device, args.liger, args.quick):
        if args.device == "cpu":
            spec.update(threads=args.threads, reps=args.reps)
            res = measure_cpu(spec)
        else:
            res = measure_cuda(spec)
        res["spec"] = spec
        results.append(res)
        print(f"{label(spec):70s} {spec['variant']:9s} {_fmt(res['ms']):>10s} ms "
              f"{_fmt(res['peak_extra_mb'], 0):>8s} MB {res.get('error') or ''}", flush=True)
    if args.device == "cuda":
        dev = torch.cuda.get_device_name(0)
    else:
        dev = f"{platform.processor() or platform.machine()} CPU, {args.threads} threads (other jobs running)"
    meta = {"device": dev, "torch": torch.__version__, "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"kernels_{args.device}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    md = f"# kernels benchmark on {dev}\n\n{json.dumps(meta)}\n\n{table(results)}\n"
    (args.out / f"{stem}.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
