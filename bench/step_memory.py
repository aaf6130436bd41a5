"""Peak RSS and step time of `minirft train` on a recipe, for a few configurations side by side.

Each configuration is the recipe plus dotted overrides, run as the user runs it (`minirft train`, its
own process, so ``ru_maxrss`` from ``os.wait4`` is that run's peak RSS); step times are the medians of
the run's `step` records after the first (a warm-up).

    python bench/step_memory.py                      # recipes/polite.yaml, 3 steps a configuration
    python bench/step_memory.py --steps 4 --threads 2

Also the recipe's judge alone, scoring one step of the policy's own answers, with llama.cpp allowed
512 and 64 logits rows per decode (``MAX_OUTPUTS``). Prints tables and writes bench/results/step_memory_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [  # (label, overrides, environment)
    ("defaults (generation.engine auto)", [], {}),
    ("generation.engine torch", ["generation.engine=torch"], {}),
    ("torch + gradient checkpointing", ["generation.engine=torch", "policy.gradient_checkpointing=true"], {}),
    ("auto + gradient checkpointing", ["policy.gradient_checkpointing=true"], {}),
    # glibc returns every allocation above 64 KiB to the OS at once (no dynamic threshold)
    ("torch + fixed 64 KiB mmap threshold", ["generation.engine=torch"], {"MALLOC_MMAP_THRESHOLD_": "65536"}),
]
JUDGE_ANSWERS = ROOT / "bench" / "data" / "own-style.jsonl"  # the policy's own answers


def run(recipe: Path, overrides: list[str], extra_env: dict, steps: int, threads: int, work: Path) -> dict:
    from minirft.events import read_events

    run_dir = work / f"run-{len(list(work.iterdir()))}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **extra_env}
    cmd = [sys.executable, "-m", "minirft", "train", str(recipe), f"training.steps={steps}",
           f"judge.n_threads={threads}", "checkpoint.every=1000", *overrides, "--run-dir", str(run_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    m = {e["step"]: e["metrics"] for e in read_events(run_dir / "events.jsonl") if e["type"] == "step"}
    later = [m[s] for s in sorted(m) if s >= 2] or [m[1]]

    def med(key: str) -> float | None:
        vals = [x[key] for x in later if x.get(key) is not None]
        return statistics.median(vals) if vals else None

    return {"overrides": overrides, "env": extra_env, "peak_rss_gb": round(usage.ru_maxrss / 1024 / 1024, 3), "wall_s": round(wall, 1),
            **{k: med(k) for k in ("step_s", "generation_s", "judge_s", "update_s")},
            "engine": next((e.get("generation_engine") for e in read_events(run_dir / "events.jsonl")
                            if e["type"] == "run_start"), None)}


def judge_worker(recipe: Path, max_outputs: int, threads: int) -> None:
    """One judge step of the recipe's judge alone (4 prompts x 4 of the policy's own answers), with
    llama.cpp allowed ``max_outputs`` logits rows per decode; prints its seconds (the parent reads
    the process's peak RSS)."""
    from minirft.data import parse_row
    from minirft.judge import build_judge
    from minirft.judge.backends import llama_cpp as backend
    from minirft.recipe import load_recipe

    backend.MAX_OUTPUTS = max_outputs
    r = load_recipe(recipe, [f"judge.n_threads={threads}"])
    judge = build_judge(r.judge)
    ans = [json.loads(line) for line in JUDGE_ANSWERS.read_text().splitlines() if line.strip()][:20]
    rows = [parse_row({"prompt": a["prompt"]}, "bench") for a in ans[:16:4]]
    groups = [[a["response"] for a in ans[i:i + 4]] for i in range(0, 16, 4)]
    judge.score_groups([parse_row({"prompt": ans[16]["prompt"]}, "bench")], [[a["response"] for a in ans[16:]]])
    t = time.perf_counter()
    judge.score_groups(rows, groups)
    print(json.dumps({"seconds": time.perf_counter() - t}))


def judge_rows(recipe: Path, threads: int) -> list[dict]:
    out = []
    for n in (512, 64):
        cmd = [sys.executable, __file__, "--judge-worker", str(n), "--recipe", str(recipe), "--threads", str(threads)]
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed")
        seconds = json.loads(proc.stdout.read().strip().splitlines()[-1])["seconds"]
        out.append({"max_outputs": n, "peak_rss_gb": round(usage.ru_maxrss / 1024 / 1024, 3), "judge_s": seconds})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "polite.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--judge-worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.judge_worker:
        return judge_worker(args.recipe, args.judge_worker, args.threads)
    out = args.out or ROOT / "bench" / "results" / f"step_memory_{args.recipe.stem}.json"
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides, env in CONFIGS:
            print(f"[{time.strftime('%H:%M:%S')}] {label}", flush=True)
            rows.append({"config": label, **run(args.recipe, overrides, env, args.steps, args.threads, Path(tmp))})
    print(f"[{time.strftime('%H:%M:%S')}] the judge alone, 512 and 64 logits rows per decode", flush=True)
    judge = judge_rows(args.recipe, args.threads)
    print(f"\n{'configuration':<36}{'peak RSS GB':>12}{'step s':>8}{'gen s':>7}{'judge s':>8}{'update s':>9}")
    for r in rows:
        print(f"{r['config']:<36}{r['peak_rss_gb']:>12.2f}{r['step_s']:>8.1f}{r['generation_s']:>7.1f}"
              f"{r['judge_s']:>8.1f}{r['update_s']:>9.1f}")
    print(f"\n{'judge alone: logits rows per decode':<36}{'peak RSS GB':>12}{'judge s':>8}")
    for r in judge:
        print(f"{r['max_outputs']:<36}{r['peak_rss_gb']:>12.2f}{r['judge_s']:>8.1f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M"), "recipe": str(args.recipe.relative_to(ROOT)), "steps": args.steps,
        "threads": args.threads, "cpu_count": os.cpu_count(), "load_average_start": load0,
        "load_average_end": os.getloadavg(),
        "note": "step seconds are medians of steps 2..; on a shared machine compare rows of one file only",
        "rows": rows, "judge_alone": judge}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
