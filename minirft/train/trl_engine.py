"""``minirft train RECIPE --engine trl``: the recipe trained by TRL's GRPOTrainer (accelerate, DeepSpeed, N GPUs).

The recipe maps onto TRL's ``GRPOConfig`` + a peft ``LoraConfig`` + reward functions (the recipe's judge
through :func:`minirft.integrations.trl.judge_reward`, its rule rewards wrapped to TRL's signature, with
the recipe's weights as ``reward_weights``). A recipe key that TRL has no equivalent for is an error
naming the key (see :data:`UNMAPPABLE`); nothing is silently dropped.

The run dir is minirft's: ``recipe.resolved.yaml``, ``command.txt``, ``events.jsonl`` in minirft's schema
(``run_start``, one ``step`` per optimizer step with TRL's metrics under minirft's names plus the judge's
``criteria/<name>``, ``sample`` rows with rationales, ``checkpoint`` events, the reward-hacking
detectors' ``warning`` events, ``run_end``) and the final LoRA
``adapter/``, so ``minirft watch`` and ``minirft eval`` work on it. TRL's own checkpoints go to
``checkpoints/``. Under several processes (``accelerate launch --num_processes N``) every process judges
its own completions; rank 0 gathers them (accelerate ``gather_object``) and is the only writer.

Batch mapping: one optimizer step = ``training.prompts_per_step`` prompts × ``generation.group_size``
completions over all processes; ``training.micro_batch_prompts`` prompts per process per micro-batch
(TRL's ``per_device_train_batch_size`` counts completions), the rest is gradient accumulation.
"""

from __future__ import annotations

import math
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from minirft import __version__
from minirft.atomic import atomic_dir, write_text
from minirft.data import load_prompts
from minirft.errors import MinirftError
from minirft.events import EventLog, failure_message
from minirft.judge.base import Judge
from minirft.recipe import Recipe, _key_lines, dump_recipe, recipe_to_dict
from minirft.rewards import NamedReward, build_rewards, call_reward
from minirft.stats import mean_of

# (section path, key, test(value) -> True when TRL cannot do it, what to do instead)
UNMAPPABLE: list[tuple[tuple[str, ...], str, Any, str]] = [
    (("policy",), "backend", lambda v: v == "unsloth",
     "unsloth has no TRL engine equivalent here (use backend: hf, or unsloth's own TRL patching in a script)"),
    (("policy",), "load_in_4bit", lambda v: v is True,
     "a 4-bit base is not mapped to TRL (pass a BitsAndBytesConfig in your own TRL script)"),
    (("policy",), "max_prompt_tokens", lambda v: True,
     "TRL's GRPOConfig has no prompt-length limit; remove the key (prompts are passed whole)"),
    (("judge",), "self_judge", lambda v: v is True,
     "self-judging with TRL's policy is not supported; use an independent judge"),
    (("training",), "drop_zero_std_groups", lambda v: v is True,
     "TRL's GRPOTrainer has no dynamic sampling (dropping zero-std groups); remove the key"),
]

# training.loss -> (TRL loss_type, importance_sampling_level); grpo follows training.loss_norm
LOSS_TYPES = {"dr_grpo": ("dr_grpo", "token"), "dapo": ("dapo", "token"), "gspo": ("grpo", "sequence")}

# TRL log key -> minirft step-metric name
TRL_METRICS = {
    "reward": "reward", "reward_std": "reward_std", "kl": "kl", "loss": "loss", "entropy": "entropy",
    "completions/mean_length": "completion_length", "frac_reward_zero_std": "frac_reward_zero_std",
    "learning_rate": "lr", "grad_norm": "grad_norm", "clip_ratio/region_mean": "clip_ratio",
}


def _fail(recipe: Recipe, path: tuple, what: str) -> MinirftError:
    where = str(recipe.source) if recipe.source else "<recipe>"
    line = None
    if recipe.source and recipe.source.is_file():
        line = _key_lines(recipe.source.read_text(encoding="utf-8")).get(path)
    place = f"{where}:{line}" if line else where
    return MinirftError(f"{place}: {'.'.join(path)}: {what} (--engine trl)")


def check_mappable(recipe: Recipe) -> None:
    """Raise naming the first recipe key that was set and has no TRL equivalent."""
    for section, key, bad, what in UNMAPPABLE:
        node: Any = recipe
        for part in section:
            node = getattr(node, part, None)
        if node is None or key not in node.model_fields_set:
            continue
        if bad(getattr(node, key)):
            raise _fail(recipe, section + (key,), what)


def batch_layout(recipe: Recipe, processes: int) -> tuple[int, int]:
    """(per_device_train_batch_size in completions, gradient_accumulation_steps)."""
    tr, G = recipe.training, recipe.generation.group_size
    P = tr.prompts_per_step
    total = P * G
    accum = max(1, math.ceil(P / (tr.micro_batch_prompts * processes)))
    while accum > 1 and total % (processes * accum):
        accum -= 1
    if total % (processes * accum):
        raise _fail(recipe, ("training", "prompts_per_step"),
                    f"{P} prompts x {G} completions must split evenly over {processes} processes")
    return total // (processes * accum), accum


def grpo_config(recipe: Recipe, run_dir: Path, processes: int, verbose: bool = False):
    import torch
    from trl import GRPOConfig

    tr, gen, pol = recipe.training, recipe.generation, recipe.policy
    cuda = torch.cuda.is_available()
    per_device, accum = batch_layout(recipe, processes)
    optim = {"adamw": "adamw_torch", "adamw8bit": "adamw_bnb_8bit"}.get(tr.optimizer)
    if optim is None:  # auto, as minirft's own trainer: 8-bit AdamW on CUDA when bitsandbytes is there
        import importlib.util

        optim = "adamw_bnb_8bit" if cuda and importlib.util.find_spec("bitsandbytes") else "adamw_torch"
    dtype = pol.dtype if pol.dtype != "auto" else ("bfloat16" if cuda else "float32")
    judge_w = [recipe.judge_weight] if recipe.judge is not None else []
    loss_type, level = LOSS_TYPES.get(tr.loss, ("dapo" if tr.loss_norm == "token" else "grpo", "token"))
    return GRPOConfig(
        output_dir=str(run_dir / "checkpoints"), max_steps=tr.steps, per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum, num_generations=gen.group_size, max_completion_length=gen.max_new_tokens,
        temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, learning_rate=tr.lr,
        lr_scheduler_type="constant_with_warmup" if tr.lr_schedule == "constant" else tr.lr_schedule,
        warmup_steps=tr.warmup_steps, weight_decay=tr.weight_decay, optim=optim, max_grad_norm=tr.max_grad_norm,
        beta=tr.beta, epsilon=tr.clip_range()[0], epsilon_high=tr.clip_range()[1],
        scale_rewards=tr.advantage_scaling(), loss_type=loss_type, importance_sampling_level=level,
        mask_truncated_completions=gen.mask_truncated, num_iterations=1, seed=tr.seed,
        shuffle_dataset=recipe.data.shuffle, save_strategy="steps", save_steps=recipe.checkpoint.every,
        save_total_limit=recipe.checkpoint.keep_last, logging_steps=1, report_to=[], use_cpu=not cuda,
        bf16=dtype == "bfloat16", fp16=dtype == "float16", gradient_checkpointing=pol.gradient_checkpointing,
        reward_weights=judge_w + [r.weight for r in recipe.rewards], log_completions=False,
        disable_tqdm=not verbose, dataloader_num_workers=0,
        ddp_find_unused_parameters=False if processes > 1 else None, **vllm_options(recipe),
    ), dtype


def vllm_options(recipe: Recipe) -> dict[str, Any]:
    """``generation.engine: vllm`` as TRL's own vLLM rollouts (``use_vllm``, ``vllm_mode``, the server URL
    or the colocated share of GPU memory); nothing otherwise. vLLM itself is the user's install: TRL
    checks it is importable when the trainer starts."""
    gen = recipe.generation
    if gen.engine != "vllm":
        return {}
    options: dict[str, Any] = {"use_vllm": True, "vllm_mode": gen.vllm_mode}
    if gen.vllm_mode == "server":
        options["vllm_server_base_url"] = gen.vllm_server_url
    else:
        options["vllm_gpu_memory_utilization"] = gen.vllm_gpu_memory_utilization
    return options


def build_dataset(recipe: Recipe):
    from datasets import Dataset

    rows = load_prompts(recipe.resolve_path(recipe.data.path))
    keys = sorted({k for r in rows for k in r.columns} | {"reference"})
    records = [{"prompt": [dict(m) for m in r.messages], **{k: r.columns.get(k) for k in keys}} for r in rows]
    for rec, r in zip(records, rows):
        rec["reference"] = r.reference
    return Dataset.from_list(records)


def load_base(recipe: Recipe, dtype: str):
    """The policy base and its tokenizer, as minirft's own trainer resolves ``policy.model``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minirft.train.policy import _finish_tokenizer, _source

    path, extra = _source(recipe.policy.model, recipe.source.parent if recipe.source else None)
    try:
        tok = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **extra)
    except (OSError, ValueError) as exc:
        raise MinirftError(f"policy.model '{recipe.policy.model}': cannot load ({str(exc).splitlines()[0]})") from None
    if extra.get("gguf_file"):  # dequantised on load, but still marked quantized: the Trainer would refuse it
        model.hf_quantizer = None
        model.is_quantized = False
    _eos, pad = _finish_tokenizer(tok, model)
    model.generation_config.pad_token_id = pad
    return model, tok


class RuleReward:
    """A recipe rule reward with TRL's signature (chats → text, dataset columns by name)."""

    def __init__(self, reward: NamedReward, sink: "StepRecorder") -> None:
        from minirft.integrations.trl import dataset_columns, prompt_row, text_of

        self.reward, self.sink = reward, sink
        self.__name__ = reward.name
        self._cols, self._row, self._text = dataset_columns, prompt_row, text_of

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        cols = self._cols(kwargs)
        texts = [self._row(p, {}).prompt for p in prompts]
        values = call_reward(self.reward, texts, [self._text(c) for c in completions], cols)
        self.sink.rules[self.reward.name] = values
        if not self.sink.prompts:
            self.sink.prompts, self.sink.completions = texts, [self._text(c) for c in completions]
        return values


class StepRecorder:
    """This process's judged samples of the current step (filled by the reward functions)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prompts: list[str] = []
        self.completions: list[str] = []
        self.scores: list[Any] = []
        self.rules: dict[str, list] = {}
        self.judge_s = 0.0

    def on_judged(self, rows, texts, scores, seconds) -> None:
        self.prompts, self.completions, self.scores = [r.prompt for r in rows], list(texts), list(scores)
        self.judge_s += seconds

    def snapshot(self, rank: int, judge: Judge | None = None) -> dict:
        n = len(self.completions)
        counters = judge.take_metrics() if judge is not None else {}
        return {"rank": rank, "counters": counters, "prompts": self.prompts, "completions": self.completions, "judge_s": self.judge_s,
                "scores": [(s.reward, dict(s.criteria), s.rationale, dict(s.criterion_rationales), s.error)
                           for s in self.scores] or [None] * n,
                "rules": {k: list(v) for k, v in self.rules.items()}}


def _versions() -> dict:
    out: dict[str, str | None] = {"minirft": __version__}
    for dist in ("torch", "transformers", "peft", "trl", "accelerate", "llama-cpp-python"):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _events_callback(recipe: Recipe, run_dir: Path, recorder: StepRecorder, log: EventLog | None, rank: int,
                     world: int, quiet: bool, judge_state: Any = None):
    from transformers import TrainerCallback

    judge_w = recipe.judge_weight
    weights = {r.name: r.weight for r in recipe.rewards}
    G = recipe.generation.group_size

    from minirft.train.monitor import RunMonitor, rubric_texts

    class MinirftEvents(TrainerCallback):
        """events.jsonl in minirft's schema, written by rank 0 from every process's judged samples."""

        def __init__(self) -> None:
            self.parts: list[dict] = []
            self.t_step = time.perf_counter()
            # the reward-hacking and drift detectors, on every completion of the step (all processes)
            self.monitor = RunMonitor(rubric_texts(recipe.judge))

        def on_step_end(self, args, state, control, **kw):
            snap = recorder.snapshot(rank, judge_state.built if judge_state is not None else None)
            if world > 1:  # a collective: every process reaches on_step_end once per optimizer step
                from accelerate.utils import gather_object

                self.parts = gather_object([snap])
            else:
                self.parts = [snap]
            recorder.reset()

        def on_log(self, args, state, control, logs=None, **kw):
            if log is None or not logs or "train_runtime" in logs:
                return
            step = int(state.global_step)
            m: dict[str, Any] = {}
            for key, name in TRL_METRICS.items():
                if key in logs:
                    m[name] = logs[key]
            for key, v in logs.items():
                if key.startswith("rewards/") and key.endswith("/mean"):
                    m["rewards/" + key[len("rewards/"):-len("/mean")]] = v
            samples = self._samples()
            crit: dict[str, list] = {}
            for s in samples:
                for name, p in s["criteria"].items():
                    crit.setdefault(name, []).append(p)
            for name, ps in crit.items():
                m[f"criteria/{name}"] = mean_of(ps)
            now = time.perf_counter()
            m["judge_s"] = max((p["judge_s"] for p in self.parts), default=0.0)
            m["step_s"] = now - self.t_step
            self.t_step = now
            m["judge/completions"] = sum(1 for s in samples if s["judged"])
            m["judge/processes"] = len({s["rank"] for s in samples if s["judged"]})
            m["judge_errors"] = sum(1 for s in samples if s["judge_error"])
            m["processes"] = world
            for part in self.parts:  # the judge backends' counters, summed over processes
                for k, v in part.get("counters", {}).items():
                    if isinstance(v, (int, float)):
                        m[k] = (m.get(k) or 0) + v if not k.endswith(("_s", "max_s")) else max(m.get(k) or 0, v)
            log.write("step", step, metrics=m)
            for s in self._shown(samples):
                log.write("sample", step, **s)
            for alert in self.monitor.update(step, samples, m):
                log.event(step, "warning", alert.message, detector=alert.detector, value=alert.value)
                if not quiet:
                    print(f"step {step}/{recipe.training.steps}  warning [{alert.detector}] {alert.message}",
                          file=sys.stderr, flush=True)
            if not quiet:
                r = m.get("reward")
                print(f"step {step}/{recipe.training.steps}  reward {'—' if r is None else format(r, '.3f')}  "
                      f"kl {m.get('kl', 0.0):.4f}  judge {m['judge_s']:.1f}s  step {m['step_s']:.1f}s  (trl)",
                      file=sys.stderr, flush=True)

        def on_save(self, args, state, control, **kw):
            if log is not None:
                path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                log.event(int(state.global_step), "checkpoint", f"saved {path.relative_to(run_dir)}", path=str(path))

        def _samples(self) -> list[dict]:
            out = []
            for part in self.parts:
                for k, completion in enumerate(part["completions"]):
                    sc = part["scores"][k] if k < len(part["scores"]) else None
                    rules = {name: vals[k] for name, vals in part["rules"].items()}
                    judge = sc[0] if sc else None
                    out.append({"rank": part["rank"], "prompt": part["prompts"][k], "completion": completion,
                                "rewards": ({"judge": judge} if sc else {}) | rules,
                                "criteria": sc[1] if sc else {}, "rationale": sc[2] if sc else None,
                                "criterion_rationales": sc[3] if sc else {},
                                "judge_error": sc[4] if sc else None, "judged": sc is not None})
            for s in out:
                parts = [weights[n] * v for n, v in s["rewards"].items() if n != "judge" and v is not None]
                if "judge" in s["rewards"]:
                    parts = None if s["rewards"]["judge"] is None else parts + [judge_w * s["rewards"]["judge"]]
                s["reward"] = sum(parts) if parts else None
            # group-relative advantages over whole groups (the gathered batch is group-major)
            for g in range(0, len(out) - len(out) % G, G):
                vals = [s["reward"] for s in out[g:g + G] if s["reward"] is not None]
                mean = sum(vals) / len(vals) if vals else 0.0
                std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5 if vals else 0.0
                for i, s in enumerate(out[g:g + G]):
                    s["group"], s["index"] = g // G, i
                    if s["reward"] is None:
                        s["advantage"] = 0.0
                    else:
                        adv = s["reward"] - mean
                        s["advantage"] = adv / (std + 1e-4) if recipe.training.advantage_scaling() == "group" else adv
            return out

        def _shown(self, samples: list[dict]) -> list[dict]:
            n = recipe.logging.samples_per_step
            groups: dict[int, list[dict]] = {}
            for s in samples:
                groups.setdefault(s.get("group", 0), []).append(s)
            order = [groups[g] for g in sorted(groups)]
            picked: list[dict] = []
            depth = 0
            while len(picked) < n and any(depth < len(g) for g in order):
                picked += [g[depth] for g in order if depth < len(g)][: n - len(picked)]
                depth += 1
            return [{k: v for k, v in s.items() if k != "judged"} for s in picked]

    return MinirftEvents()


def train_trl(recipe: Recipe, run_dir: Path, *, argv: list[str] | None = None, quiet: bool = False,
              verbose: bool = False) -> Path:
    """Train ``recipe`` with TRL's GRPOTrainer into ``run_dir`` (minirft's run-dir layout)."""
    check_mappable(recipe)  # before any import: a recipe error costs nothing
    if not verbose:
        _quiet_third_party()
    try:
        import trl  # noqa: F401
        from peft import LoraConfig
        from trl import GRPOTrainer
    except ImportError as exc:
        raise MinirftError(f"--engine trl needs TRL ({exc}): pip install 'minirft[trl]'") from None
    from minirft.train.loop import absolutise

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    main = rank == 0
    run_dir = Path(run_dir)
    argv = list(argv if argv is not None else sys.argv)
    recipe = absolutise(recipe)
    args, dtype = grpo_config(recipe, run_dir, world, verbose)
    dataset = build_dataset(recipe)
    rules = build_rewards(recipe.rewards)
    recorder = StepRecorder()
    reward_funcs: list = []
    judge_state = None
    if recipe.judge is not None:
        from minirft.integrations.trl import judge_reward

        fn = judge_reward(recipe)
        judge_state = fn.judge
        judge_state.listeners.append(recorder.on_judged)
        reward_funcs.append(fn)
    reward_funcs += [RuleReward(r, recorder) for r in rules]
    model, tok = load_base(recipe, dtype)
    lora = recipe.policy.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM")

    log = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "recipe.resolved.yaml", dump_recipe(recipe))
        write_text(run_dir / "command.txt", " ".join(argv) + "\n")
        log = EventLog(run_dir / "events.jsonl")
        log.write("run_start", 0, run_name=run_dir.name, recipe=recipe_to_dict(recipe), engine="trl",
                  policy_model=recipe.policy.model, judge_model=recipe.judge.model if recipe.judge else None,
                  total_steps=recipe.training.steps, argv=argv, versions=_versions(),
                  device="cuda" if not args.use_cpu else "cpu", backend="trl", processes=world, resumed_from=None,
                  trl={"per_device_train_batch_size": args.per_device_train_batch_size,
                       "gradient_accumulation_steps": args.gradient_accumulation_steps,
                       "loss_type": args.loss_type, "scale_rewards": args.scale_rewards})
    status, message = "failed", "crashed"
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                              processing_class=tok, peft_config=peft_config,
                              callbacks=[_events_callback(recipe, run_dir, recorder, log, rank, world, quiet,
                                                         judge_state)])
        if not verbose:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # minirft prints its own line per step
        trainer.train()
        if main:
            with atomic_dir(run_dir / "adapter") as tmp:
                trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(tmp), safe_serialization=True)
        trainer.accelerator.wait_for_everyone()
        status, message = "finished", f"{recipe.training.steps} steps (trl); adapter in {run_dir / 'adapter'}"
    except KeyboardInterrupt:
        status, message = "stopped", "interrupted (the TRL engine does not resume minirft-style)"
        raise
    except Exception as exc:
        message = failure_message(exc)
        raise
    finally:
        if log is not None:
            log.write("run_end", recipe.training.steps if status == "finished" else -1, status=status,
                      message=message)
            log.close()
        if judge_state is not None:
            judge_state.close()
    return run_dir


def _quiet_third_party() -> None:
    import logging
    import warnings

    for name in ("bitsandbytes", "trl", "accelerate", "peft", "datasets", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
