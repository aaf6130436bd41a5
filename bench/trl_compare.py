"""minirft's GRPO loop vs TRL's GRPOTrainer, side by side in one invocation: step time and peak RSS.

Both trainers run the same model, prompts, G, lengths, LoRA (r, alpha, all linear layers), β,
learning rate and temperature, in the same dtype (one row per dtype: fp32 and bf16), each in its
own subprocess so that each one's peak RSS (``ru_maxrss`` of that child, from ``os.wait4``) is its
own. The first step of each is a warm-up, left out of the median.

Two configurations (``--config``):

- ``polite`` (default): ``recipes/polite.yaml`` as shipped (SmolLM2-135M policy, Gemma-270M judge,
  4 prompts × 4, 48 new tokens, LoRA r=16, micro-batches of one group). minirft runs the recipe
  itself (its own batched judge). TRL gets the equivalent judge reward written the way users write
  it: a reward function that loads the same judge GGUF in llama-cpp-python and, per completion and
  criterion, calls ``Llama.create_completion`` on the same judge prompt text (minirft's own
  ``Layout``): for a yes/no question, ``max_tokens=1`` and the verdict text parsed; for a contrast
  criterion (polite.yaml's two), ``eval`` with ``logits_all`` under each condition and the response's
  token log-probs differenced and aggregated as minirft does (``users_judge_reward``); the criteria
  combined with the recipe's weights. The recipe's length reward is the same callable on both sides
  (``minirft.rewards``), with the same weights.
- ``toy``: no judge (a share-of-lowercase-letters reward), the trainers' own overhead only;
  ``--model tiny`` builds a random 2-layer Llama.

For minirft, the worker also records the peak RSS of each phase (VmHWM reset through
``/proc/self/clear_refs`` at each phase boundary): policy load, optimizer, judge load, and per step
generation, judging, reference log-probs, policy forward+backward.

    python bench/trl_compare.py                 # polite, fp32 and bf16 rows, 6 steps each
    python bench/trl_compare.py --quick         # 3 steps each (2 timed)
    python bench/trl_compare.py --config toy --model tiny --steps 6

TRL is the project's ``trl`` extra (``pip install 'minirft[trl]'``). Prints a table and writes
bench/results/trl_compare_<config>.json (``--quick``: ..._quick.json).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builder lives with the tests

PROMPTS = ["cats", "rain", "tea", "maps", "snow", "bread", "owls", "jazz"]
GOALS = {"step_ratio": 0.4, "peak_rss_gb": 2.0}  # issue 18 §3: minirft/TRL step time; minirft's peak RSS


def toy_reward(prompts, completions, **_):
    """Share of lowercase ASCII letters (same callable for both trainers)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # TRL conversational → messages
    return [sum("a" <= ch <= "z" for ch in t) / max(1, len(t)) for t in texts]


# ------------------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Phases:
    """Peak RSS per phase, in MB: the phase's own peak (VmHWM, reset as each phase ends, so a phase's peak
    includes any gap before it) and the RSS left after it. Resetting VmHWM also resets what the kernel
    reports as the process's ``ru_maxrss``, so the run's peak is tracked here (``overall_mb``)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.overall_mb = 0.0
        self.resets = _reset_peak()
        self.mark_end("imports (torch, transformers, peft, llama_cpp)")

    def wrap(self, name: str, fn):
        def inner(*a, **k):
            try:
                return fn(*a, **k)
            finally:
                self.mark_end(name)
        return inner

    def mark_end(self, name: str) -> None:
        peak, rss = _status_kb("VmHWM") / 1024, _status_kb("VmRSS") / 1024
        self.overall_mb = max(self.overall_mb, peak)
        row = self.rows.setdefault(name, {"peak_mb": 0.0, "rss_after_mb": 0.0, "calls": 0})
        row["peak_mb"] = round(max(row["peak_mb"], peak), 1)
        row["rss_after_mb"] = round(rss, 1)
        row["calls"] += 1
        _reset_peak()

    def final_mb(self) -> float:
        return round(max(self.overall_mb, _status_kb("VmHWM") / 1024), 1)


# ------------------------------------------------------------------------------------------ recipes
def recipe_for(args, work: Path, dtype: str):
    """The run's recipe (a Recipe): recipes/polite.yaml with the bench's overrides, or the toy one."""
    from minirft.recipe import load_recipe, validate_recipe

    common = [f"training.steps={args.steps}", f"policy.dtype={dtype}", "checkpoint.every=10000"]
    if args.config == "polite":
        return load_recipe(ROOT / "recipes" / "polite.yaml", common + [f"judge.n_threads={args.threads}"])
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in PROMPTS))
    return validate_recipe({
        "name": "bench",
        "policy": {"model": model_path(args.model, work), "backend": "hf", "dtype": dtype,
                   "lora": {"r": args.r, "alpha": 2 * args.r}},
        "rewards": [{"type": "python", "name": "letters", "function": "trl_compare:toy_reward"}],
        "data": {"path": str(data), "shuffle": False},
        "generation": {"group_size": args.group, "max_new_tokens": args.new_tokens, "temperature": 1.0},
        "training": {"steps": args.steps, "prompts_per_step": args.prompts, "micro_batch_prompts": args.micro,
                     "lr": 1e-4, "beta": args.beta, "optimizer": "adamw"},
        "checkpoint": {"every": 10_000},
        "logging": {"samples_per_step": 0},
    })


def model_path(name: str, work: Path) -> str:
    if name != "tiny":
        return name
    from train_fixtures import make_tiny_model

    return str(make_tiny_model(work / "tiny-model"))


# ------------------------------------------------------------------------------------------ workers
def run_minirft(args, work: Path) -> dict:
    import minirft.train.loop as loop
    import minirft.train.rollout as rollout
    from minirft.events import read_events
    from minirft.train.policy import Policy

    recipe = recipe_for(args, work, args.dtype)
    ph = Phases()
    # Phase boundaries: each wrapped call is one phase (its own peak), the reference pass inside update
    # is split out by wrapping Policy.reference.
    loop.load_policy = ph.wrap("policy load", loop.load_policy)
    loop.make_optimizer = ph.wrap("optimizer", loop.make_optimizer)
    build = loop.build_judge_for

    def build_judge_for(*a, **k):
        judge = build(*a, **k)
        if hasattr(judge, "load"):
            judge.load = ph.wrap("judge load", judge.load)
        return judge

    loop.build_judge_for = build_judge_for
    rollout.generate = ph.wrap("generation", rollout.generate)
    rollout.judge_groups = ph.wrap("judging", rollout.judge_groups)
    update = loop.update

    loop.update = ph.wrap("policy forward+backward", update)
    reference = Policy.reference

    def ref(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            ph.mark_end("policy forward+backward")  # what ran in update before the reference pass
            with reference(self):
                yield
            ph.mark_end("reference log-probs")
        return cm()

    Policy.reference = ref
    run = loop.train(recipe, work / "minirft-run", quiet=True, argv=["bench"])
    steps = [e for e in read_events(run / "events.jsonl") if e["type"] == "step"]
    rewards = [e["metrics"].get("reward") for e in steps]
    return {"step_s": [e["metrics"]["step_s"] for e in steps], "reward_mean": rewards,
            "phase_s": {k: [e["metrics"].get(k) for e in steps] for k in ("generation_s", "judge_s", "update_s")},
            "phases_mb": ph.rows, "phase_peaks_reset": ph.resets, "tracked_peak_mb": ph.final_mb()}


def users_judge_reward(recipe, threads: int):
    """The judge reward as users write it for TRL, in llama-cpp-python, one call per completion and
    criterion (and condition), the recipe's weights combining the criteria:

    - a yes/no question: ``create_completion(prompt, max_tokens=1)``, the verdict text parsed;
    - a contrast criterion: ``eval(condition + response)`` under the positive and the negative
      condition with ``logits_all`` (llama-cpp-python's way to prompt log-probs), the response's token
      log-probs read from ``llm.scores``, and minirft's own aggregation and sharpness applied to their
      differences, so both sides compute the same reward."""
    import llama_cpp

    from minirft.data import parse_row
    from minirft.judge import build_judge
    from minirft.judge.methods import contrast
    from minirft.judge.base import CHARS_PER_TOKEN
    from minirft.judge.prompts import CONTRAST_HEADER
    from minirft.models import resolve_model

    cfg = recipe.judge
    layout = build_judge(cfg).layout  # the same prompt text as minirft's judge (the model is not loaded)
    needs_scores = any(c.method == "contrast" for c in cfg.criteria)
    llm = llama_cpp.Llama(str(resolve_model(cfg.model).path), n_ctx=2048, n_threads=threads,
                          logits_all=needs_scores, verbose=False)
    header = layout.header()
    total = sum(c.weight for c in cfg.criteria)

    def response_logprobs(prefix: str, response: str) -> np.ndarray:
        # create_completion(echo=True, logprobs=0) would give these too, but llama-cpp-python sorts the
        # whole 262k vocabulary in Python for every echoed token (minutes per call): users read llm.scores
        ctx = llm.tokenize(prefix.encode("utf-8"), add_bos=True, special=True)
        resp = llm.tokenize(response.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ctx + resp)
        z = np.asarray(llm.scores[len(ctx) - 1:len(ctx) + len(resp) - 1], dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return z[np.arange(len(resp)), resp] - lse

    def judge(prompts, completions, **_):
        out = []
        for p, c in zip(prompts, completions):
            row = parse_row({"prompt": p[-1]["content"]}, "trl")
            text = c[-1]["content"]
            score = 0.0
            for crit in cfg.criteria:
                if crit.method == "contrast":
                    reply = text.strip()[:crit.max_response_tokens * CHARS_PER_TOKEN]
                    if not reply:
                        score += crit.weight * 0.5
                        continue
                    pos, neg = (CONTRAST_HEADER + layout.contrast_row(row) + layout.contrast_condition(cond)
                                for cond in contrast.conditions(crit, row))
                    a = response_logprobs(pos, layout.contrast_response(reply))
                    b = response_logprobs(neg, layout.contrast_response(reply))
                    n = min(len(a), len(b), crit.max_response_tokens)
                    diffs = np.asarray(a[:n]) - np.asarray(b[:n])
                    score += crit.weight * contrast.p_pass(contrast.criterion_score(diffs, crit), crit.sharpness)
                    continue
                prompt = header + layout.row(row) + layout.response(text) + layout.criterion_cue(crit.question)
                verdict = llm.create_completion(prompt, max_tokens=1, temperature=0.0)["choices"][0]["text"]
                score += crit.weight * (verdict.strip().lower().startswith("yes"))
            out.append(score / total)
        return out

    judge.__name__ = "judge"
    return judge


def run_trl(args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from minirft.data import iter_jsonl
    from minirft.models import resolve_model
    from minirft.rewards import build_rewards

    recipe = recipe_for(args, work, args.dtype)
    pol, gen, tr = recipe.policy, recipe.generation, recipe.training
    model, kwargs = pol.model, {}
    resolved = resolve_model(model) if not Path(model).is_dir() else None
    if resolved is not None and resolved.is_gguf:
        model, kwargs = str(resolved.path.parent), {"gguf_file": resolved.path.name}
    tok = AutoTokenizer.from_pretrained(model, **kwargs)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **kwargs)
    if kwargs:  # a GGUF is dequantised on load, but transformers still marks it quantized and the
        # Trainer refuses to train it; the weights are plain tensors, so drop the mark.
        policy.hf_quantizer = None
        policy.is_quantized = False
    if args.config == "polite":
        prompts = [obj["prompt"] for _, obj in iter_jsonl(recipe.resolve_path(recipe.data.path))]
    else:
        prompts = [f"Say something about {w}." for w in PROMPTS]
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    dataset = Dataset.from_list(rows * (1 + 8 * tr.steps * tr.prompts_per_step // len(rows)))

    funcs, weights = [], []
    for r in build_rewards(recipe.rewards):
        def fn(prompts, completions, _r=r, **_):
            vals = _r.fn([p[-1]["content"] for p in prompts], [c[-1]["content"] for c in completions])
            return [None if v is None else float(v) for v in vals]
        fn.__name__ = r.name
        funcs.append(fn)
        weights.append(r.weight)
    if recipe.judge is not None:
        funcs.append(users_judge_reward(recipe, args.threads))
        weights.append(recipe.judge_weight)
    G = gen.group_size
    cfg = GRPOConfig(
        output_dir=str(work / "trl-out"), use_cpu=True, per_device_train_batch_size=tr.prompts_per_step * G,
        num_generations=G, max_completion_length=gen.max_new_tokens, max_steps=tr.steps,
        learning_rate=tr.lr, beta=tr.beta, logging_steps=1, report_to=[], save_strategy="no",
        gradient_accumulation_steps=1, temperature=gen.temperature, bf16=args.dtype == "bfloat16", seed=0,
        reward_weights=weights,
    )
    times: list[float] = []
    rewards: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])

    trainer = GRPOTrainer(model=policy, reward_funcs=funcs, args=cfg, train_dataset=dataset,
                          processing_class=tok,
                          peft_config=LoraConfig(r=pol.lora.r, lora_alpha=pol.lora.alpha,
                                                 lora_dropout=pol.lora.dropout, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"),
                          callbacks=[Timer()])
    trainer.train()
    return {"step_s": times, "reward_mean": rewards}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        res = (run_minirft if args.worker == "minirft" else run_trl)(args, Path(tmp))
    res["vm_hwm_mb"] = round(_status_kb("VmHWM") / 1024, 1)
    Path(args.out).write_text(json.dumps(res))


# ------------------------------------------------------------------------------------------ driver
def spawn(args, trainer: str, dtype: str, out: Path) -> dict:
    """Run one trainer in a child process; its result plus its own peak RSS (ru_maxrss via wait4)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", trainer, "--dtype", dtype, "--out", str(out),
           "--config", args.config, "--model", args.model, "--steps", str(args.steps), "--prompts",
           str(args.prompts), "--group", str(args.group), "--new-tokens", str(args.new_tokens), "--r", str(args.r),
           "--beta", str(args.beta), "--micro", str(args.micro), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "kernels"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    log = open(out.with_suffix(".log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        tail = out.with_suffix(".log").read_text()[-3000:]
        raise SystemExit(f"{trainer} ({dtype}) failed with exit code {proc.returncode}:\n{tail}")
    res = json.loads(out.read_text())
    # Linux: KiB. A worker that reset its VmHWM (the minirft one, for its phases) tracked its own peak.
    res["peak_rss_gb"] = round(max(usage.ru_maxrss / 1024, res.get("tracked_peak_mb", 0.0)) / 1024, 3)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="polite", choices=["polite", "toy"])
    ap.add_argument("--model", default="tiny", help="toy config: 'tiny' (random 2-layer Llama) or a model name")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated rows: float32, bfloat16")
    ap.add_argument("--trainers", default="minirft,trl")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="3 steps per run (2 timed)")
    ap.add_argument("--prompts", type=int, default=4, help="toy config only (polite: the recipe's)")
    ap.add_argument("--group", type=int, default=4, help="toy config only")
    ap.add_argument("--new-tokens", type=int, default=48, help="toy config only")
    ap.add_argument("--r", type=int, default=16, help="toy config only")
    ap.add_argument("--beta", type=float, default=0.04, help="toy config only")
    ap.add_argument("--micro", type=int, default=4, help="toy config only: minirft micro_batch_prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="stored in the JSON (e.g. 'machine shared with other jobs')")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.steps = 3
    if args.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        return worker(args)

    dtypes, trainers = args.dtypes.split(","), args.trainers.split(",")
    name = f"trl_compare_{args.config}" + ("" if args.config == "polite" else f"_{args.model}") + (
        "_quick" if args.quick else "")
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "dtype", "out", "note")}
    results: dict[str, dict[str, dict]] = {}

    def med(r: dict) -> float:
        return statistics.median(r["step_s"][1:] or r["step_s"])

    def summary() -> list[dict]:
        rows = []
        for dtype, by in results.items():
            for r in by.values():
                r["median_step_s"] = round(med(r), 3)
            ratio = med(by["minirft"]) / med(by["trl"]) if {"minirft", "trl"} <= by.keys() else None
            rows.append({"dtype": dtype, "minirft_over_trl_step": None if ratio is None else round(ratio, 3),
                         **{f"{t}_median_step_s": r["median_step_s"] for t, r in by.items()},
                         **{f"{t}_peak_rss_gb": r["peak_rss_gb"] for t, r in by.items()}})
        return rows

    def save(complete: bool) -> None:  # after every trainer: a run cut short keeps what it measured
        out.write_text(json.dumps({"settings": settings, "note": args.note, "complete": complete, "goals": GOALS,
                                   "rows": summary(), "results": results}, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            for trainer in trainers:
                print(f"running {trainer} ({dtype}, {args.steps} steps)...", file=sys.stderr, flush=True)
                results.setdefault(dtype, {})[trainer] = spawn(args, trainer, dtype, Path(tmp) / f"{trainer}-{dtype}.json")
                save(False)
    save(True)

    what = ("recipes/polite.yaml (SmolLM2-135M policy, Gemma-270M judge: minirft's batched judge vs a "
            "llama-cpp-python loop per completion and criterion in TRL)" if args.config == "polite"
            else f"toy reward, model={args.model}")
    print(f"\nGRPO side by side: {what}; {args.steps} steps, {args.threads} threads; "
          "median step s (first step excluded), peak RSS of each trainer's process")
    print(f"{'dtype':<9} {'trainer':<8} {'s/step':>8} {'peak RSS GB':>12} {'minirft/TRL':>12}")
    for row in summary():
        for trainer in trainers:
            ratio = row["minirft_over_trl_step"]
            print(f"{row['dtype']:<9} {trainer:<8} {row[trainer + '_median_step_s']:>8.2f} "
                  f"{row[trainer + '_peak_rss_gb']:>12.2f} "
                  f"{(f'{ratio:.2f}x' if ratio is not None and trainer == 'minirft' else ''):>12}")
    for dtype, by in results.items():
        if "minirft" in by:
            print(f"\nminirft ({dtype}) peak RSS per phase (MB: the phase's own peak, RSS after it)")
            for phase, p in by["minirft"]["phases_mb"].items():
                print(f"  {phase:<48} {p['peak_mb']:>8.0f} {p['rss_after_mb']:>8.0f}")
    print(f"goals: minirft step time <= {GOALS['step_ratio']}x TRL; minirft peak RSS <= {GOALS['peak_rss_gb']} GB "
          "(polite)")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
