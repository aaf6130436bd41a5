"""The GRPO training loop — one file, top to bottom.

Objective (per step, one policy update per batch of rollouts):

For each of P prompts x we sample G completions y_1..y_G from the current policy π_θ (LoRA adapter on)
and score them: r_i = judge_weight · judge(x, y_i) + Σ_k w_k · rule_k(x, y_i) (see ``rollout.py``).
Group-relative advantages (``training.scale_rewards``): group — A_i = (r_i − mean_j r_j) / (std_j r_j + ε)
(ε = 1e-4, population std); batch — the same with the std of every reward of the step; none —
A_i = r_i − mean_j r_j ("Dr. GRPO"). auto (the default) is group, none for ``loss: dr_grpo``.

Per completion token t of y_i, with ρ_t = π_θ(y_t | x, y_<t) / π_old(y_t | x, y_<t):

    ℓ_t = − min(ρ_t A_i, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_i) + β · KL_t
    KL_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1        (the k3 estimator, ≥ 0)

ε_low = ``training.clip_eps``, ε_high = ``training.epsilon_high`` (see ``TrainingConfig.clip_range``).

π_ref is the same base with the LoRA adapter disabled (no second model in memory). Log-probs are those
of the sampling distribution (logits / temperature). π_old = π_θ detached: we take exactly one
optimizer step per batch (TRL's ``num_iterations=1``), so ρ_t = 1 in value and the clip never binds;
it is kept so the gradient is the PPO one and more iterations per batch are a small change.

The loss variant (``training.loss``, TRL's ``loss_type`` names), over the N sequences and all
micro-batches of the step:

- ``grpo`` (default), normalised by ``training.loss_norm``: ``token`` (default) — L = Σ_{i,t} m ℓ / Σ_{i,t} m,
  every token weighs the same whatever the completion's length; ``sequence`` — L = (1/N) Σ_i (Σ_t m ℓ /
  Σ_t m) (the original GRPO paper; TRL's ``grpo``). Symmetric clip unless ``epsilon_high`` is set.
- ``dr_grpo`` (Liu et al. 2025): L = Σ_{i,t} m ℓ / (N · L_max), L_max = ``generation.max_new_tokens``:
  a constant normaliser (no length bias), and no std scaling of the advantages.
- ``dapo`` (Yu et al. 2025): L = Σ_{i,t} m ℓ / Σ_{i,t} m over the whole step (TRL's ``dapo``
  normaliser: the accumulated batch's token count), clip-higher ε_high = 0.28 by default.
- ``gspo`` (Zheng et al. 2025): one ratio per completion s_i = exp((1/|y_i|) Σ_t m (log π_θ − log π_old)),
  ℓ_t = − min(s_i A_i, clip(s_i, 1 − ε_low, 1 + ε_high) A_i) + β · KL_t, L = (1/N) Σ_i (Σ_t m ℓ / Σ_t m);
  ε = 3e-4 / 4e-4 by default (the paper's; sequence ratios stay close to 1).

With one optimiser step per batch (ρ = s = 1), grpo with ``loss_norm: token`` and dapo give the same
gradient, and gspo the same as grpo with ``loss_norm: sequence``: the variants differ in the normaliser,
the advantage scaling, and the clip ranges that bind only once π_old ≠ π_θ.

m masks padding, tokens after the first EOS, samples excluded because their reward is missing, groups
dropped by dynamic sampling (``training.drop_zero_std_groups``, ``rollout.py``) and, with
``generation.mask_truncated``, completions that reached ``max_new_tokens`` without an EOS; N counts the
sequences left.

Then: backward per micro-batch (``micro_batch_prompts`` prompts at a time), clip the gradient norm,
optimizer step, LR-schedule step. A non-finite loss or gradient skips the step (adapter untouched,
``nan_skip`` event). Order per step: rollout → rewards → advantages → loss → step → log → checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from minirft import __version__, cuda_memory, rundir
from minirft.atomic import atomic_dir, write_text
from minirft.errors import MinirftError
from minirft.events import EventLog, failure_message
from minirft.preflight import check_recipe
from minirft.recipe import Recipe, dump_recipe, recipe_to_dict
from minirft.trackers import check_available, open_trackers
from minirft.rewards import build_rewards
from minirft_kernels import grpo_token_loss
from minirft.train import calibration_watch
from minirft.train.checkpoint import apply_checkpoint, find_resumable, list_checkpoints, save_checkpoint
from minirft.train.importance import truncated_is_weights
from minirft.train.engines import check_engine, engine_name, open_generator
from minirft.train.policy import Policy, device_name, load_policy, token_logprobs
from minirft.train.metrics import (LimitNotes, all_samples, judge_counters, policy_context, progress_line,
                                   sample_rows, step_metrics)
from minirft.train.rollout import Batch, PromptSampler, rollouts
from minirft.judge.base import Judge
from minirft.train.monitor import RunMonitor, rubric_texts


# ------------------------------------------------------------------------------------- the loss
def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, beta: float, clip_eps: float,
              loss_norm: str, normaliser: float, is_weight: torch.Tensor | None = None,
              clip_eps_high: float | None = None, ratio_level: str = "token"
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The per-token GRPO loss of one micro-batch (see the module docstring), divided by the step-wide
    ``normaliser`` (token count or sequence count of the whole step), so micro-batch losses add up to
    the step's loss. Returns (loss, sums for the step's metrics). ``is_weight``: the per-token truncated
    importance-sampling weight of llama.cpp rollouts (``importance.py``), on the policy-gradient term.

    Computed by the fused kernel ``minirft_kernels.grpo_token_loss`` (Triton on CUDA, its torch
    reference on CPU). ``clip_eps_high``: the upper clip range (default ``clip_eps``); ``ratio_level``
    "sequence": GSPO's per-completion ratio."""
    loss, m = grpo_token_loss(logp, old_logp, ref_logp if beta > 0 else None, advantages, mask,
                              clip_eps=clip_eps, beta=beta, norm=loss_norm, denominator=normaliser,
                              is_weight=is_weight, clip_eps_high=clip_eps_high, ratio_level=ratio_level)
    tokens = float(mask.sum())
    stats = {"kl_sum": float(m["kl"]) * tokens, "clip_sum": float(m["clip_ratio"]) * tokens, "tokens": tokens}
    return loss, stats


def loss_setup(recipe: Recipe, mask_all: torch.Tensor) -> dict[str, Any]:
    """The kernel's arguments for ``training.loss`` over the step's loss mask [N, C]: norm, the step-wide
    normaliser, the clip range and the ratio level (see the module docstring)."""
    tr = recipe.training
    low, high = tr.clip_range()
    rows = float((mask_all.sum(dim=1) > 0).sum())  # sequences left in the loss
    if tr.loss == "grpo":
        norm = tr.loss_norm
        normaliser = float(mask_all.sum()) if norm == "token" else rows
    elif tr.loss == "dr_grpo":
        norm, normaliser = "token", rows * recipe.generation.max_new_tokens
    elif tr.loss == "dapo":
        norm, normaliser = "token", float(mask_all.sum())
    else:  # gspo
        norm, normaliser = "sequence", rows
    return {"loss_norm": norm, "normaliser": normaliser, "clip_eps": low, "clip_eps_high": high,
            "ratio_level": "sequence" if tr.loss == "gspo" else "token"}


# ------------------------------------------------------------------------- optimizer, schedule
def make_optimizer(recipe: Recipe, params: list[torch.nn.Parameter], device: torch.device):
    tr = recipe.training
    kind = tr.optimizer
    if kind == "auto":
        kind = "adamw8bit" if device.type == "cuda" else "adamw"
    if kind == "adamw8bit":
        if device.type != "cuda":
            raise MinirftError("training.optimizer: adamw8bit (bitsandbytes) needs a CUDA GPU; use adamw")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise MinirftError("training.optimizer: adamw8bit needs bitsandbytes: pip install 'minirft[gpu]'") from None
        return bnb.optim.AdamW8bit(params, lr=tr.lr, weight_decay=tr.weight_decay)
    return torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)


def make_scheduler(recipe: Recipe, optimizer: Any):
    """training.lr_schedule with training.warmup_steps, as transformers (and so TRL) defines them."""
    from transformers import get_scheduler

    tr = recipe.training
    name = "constant_with_warmup" if tr.lr_schedule == "constant" else tr.lr_schedule
    return get_scheduler(name, optimizer, num_warmup_steps=tr.warmup_steps, num_training_steps=tr.steps)


# ------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"minirft": __version__}
    for dist, key in (("torch", "torch"), ("transformers", "transformers"), ("peft", "peft"),
                      ("llama-cpp-python", "llama_cpp")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def new_run_dir(recipe: Recipe, base: Path | None = None) -> Path:
    root = Path(base) if base is not None else Path(recipe.run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = root / f"{recipe.name}-{stamp}"
    n = 1
    while d.exists():  # two runs started within the same second
        n += 1
        d = root / f"{recipe.name}-{stamp}-{n}"
    return d


def absolutise(recipe: Recipe) -> Recipe:
    """Make the recipe's relative paths absolute, so the resolved copy in the run dir (used by --resume)
    points at the same files from anywhere."""
    r = recipe.model_copy(deep=True)
    r.data.path = str(recipe.resolve_path(recipe.data.path))
    if r.data.eval_path:
        r.data.eval_path = str(recipe.resolve_path(r.data.eval_path))
    r.data.eval_sets = {k: str(recipe.resolve_path(v)) for k, v in r.data.eval_sets.items()}
    from minirft.models import EMBEDDED

    for section in (r.policy, r.judge):
        if section is not None and section.model not in EMBEDDED:
            candidate = recipe.resolve_path(section.model)
            if candidate.exists():
                section.model = str(candidate)
    r.source = recipe.source
    return r


def build_judge_for(recipe: Recipe, policy: Policy) -> Judge | None:
    if recipe.judge is None:
        return None
    from minirft.judge import build_judge  # lazy: llama-cpp-python is only needed with a judge

    if recipe.judge.self_judge:  # the policy's base with the adapter disabled judges (no extra memory)
        return build_judge(recipe.judge, policy_model=policy.model, policy_tokenizer=policy.tokenizer)
    return build_judge(recipe.judge)


class _Stop(BaseException):
    """SIGTERM (e.g. the TUI's "stop training"): finish cleanly with run_end status=stopped.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (the judge's
    retries, a reward function's guard) can swallow it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop()


# --------------------------------------------------------------------------------- the loop
def train(recipe: Recipe, run_dir: Path, *, resume: bool = False, overwrite: bool = False, **kwargs: Any) -> Path:
    """Run (or resume) a training run into ``run_dir`` (see :func:`_train`), holding the run dir's lock
    (``minirft.rundir``) from before anything is checked until the end: a second process writing the
    same dir is refused with the holder's pid. A new run refuses a dir that already holds something,
    unless ``overwrite`` (its contents are removed once the run has really started)."""
    run_dir = Path(run_dir)
    if not resume:
        rundir.check_fresh(run_dir, overwrite=overwrite)  # before the lock: no lock file in a refused dir
    lock = rundir.RunLock(run_dir, "minirft train").acquire()
    try:
        if not resume:
            rundir.check_fresh(run_dir, overwrite=overwrite)  # another run may have started there meanwhile
        return _train(recipe, run_dir, resume=resume, overwrite=overwrite, **kwargs)
    finally:
        lock.forget_dir()


def _train(recipe: Recipe, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
           argv: list[str] | None = None, judge: Judge | None = None, on_step: Callable[[int, dict], None] | None = None,
           quiet: bool = False, from_scratch: bool = False, confirm: Callable[[str], bool] | None = None) -> Path:
    """Run (or resume) a training run into ``run_dir``; returns the run dir.

    ``judge`` replaces the recipe's judge (tests pass a fake one); ``on_step(step, metrics)`` is called
    after each logged step (tests use it to interrupt a run).

    Order: everything knowable without a model is checked (``minirft.preflight``) and, on resume, the
    checkpoint to continue from is chosen and read back whole; then the models load; only then does
    the run start: the run dir, ``recipe.resolved.yaml`` and ``command.txt`` are written and
    ``run_start`` is logged. So a run that fails before it starts leaves nothing behind, and a failed
    ``--resume DIR key=value`` leaves the run's saved recipe as it was.

    A resume with no usable checkpoint restarts from step 0 only with ``from_scratch`` or when
    ``confirm(question)`` says yes; otherwise it is an error.
    """
    tr = recipe.training
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    argv = list(argv if argv is not None else sys.argv)
    recipe = absolutise(recipe)
    notes: list[str] = []  # warnings to log once the event log is open

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(message: str) -> None:
        notes.append(message)
        say(f"warning: {message}")

    own_judge = judge is None
    rows = check_recipe(recipe, judge=own_judge)
    check_engine(recipe)
    reward_fns = build_rewards(recipe.rewards)

    resume_from = None
    if resume:
        resume_from, skipped = find_resumable(ckpt_root)
        for problem in skipped:
            warn(f"skipping {problem}")
        if resume_from is None:
            why = "every checkpoint is damaged" if skipped else "it has no complete checkpoint"
            question = f"{run_dir}: {why}; start the run again from step 0?"
            if not (from_scratch or (confirm is not None and confirm(question))):
                raise MinirftError(f"{run_dir}: cannot resume: {why}; to start it again from step 0 "
                                   "give --resume with --from-scratch")
            say(f"{run_dir}: {why}: starting again from step 0")
        else:
            say(f"resuming {run_dir} from checkpoint {resume_from.path.name}")

    check_available(recipe.logging.report_to or [])  # a tracker's package is missing: said before any model loads
    seed_everything(tr.seed)
    if torch.cuda.is_available():  # before any model allocates
        if tr.gpu_memory_gb is not None:
            say(cuda_memory.apply_cap(tr.gpu_memory_gb))
        too_big = cuda_memory.fit_warning(recipe)
        if too_big:
            warn(too_big)
    elif tr.gpu_memory_gb is not None:
        warn("training.gpu_memory_gb is ignored: no CUDA device")
    policy = load_policy(recipe.policy, seed=tr.seed, base_dir=recipe.source.parent if recipe.source else None)
    params = policy.trainable_parameters()
    optimizer = make_optimizer(recipe, params, policy.device)
    scheduler = make_scheduler(recipe, optimizer)
    sampler = PromptSampler(rows, shuffle=recipe.data.shuffle, seed=tr.seed)

    start_step = 0
    if resume_from is not None:
        state = apply_checkpoint(resume_from, policy=policy, optimizer=optimizer, scheduler=scheduler)
        start_step, sampler.position = state["step"], state["data_position"]
    if own_judge:
        judge = build_judge_for(recipe, policy)
    sampler_engine = None  # generation.engine: torch_graph / llama_cpp (None: HF generate samples)
    try:
        if own_judge and judge is not None:
            judge.load()  # a judge model that cannot load fails here, before the run starts
        sampler_engine = open_generator(recipe, policy)
        log = _start_run(recipe, run_dir, resume=resume, argv=argv, say=say, overwrite=overwrite)
    except BaseException:
        if sampler_engine is not None:
            sampler_engine.close()
        if own_judge and judge is not None:
            judge.close()
        raise
    if log.repaired:
        notes.insert(0, log.repaired)
        say(f"warning: {log.repaired}")

    # Reward-hacking and drift detectors (minirft.train.monitor): warnings in the log and on stderr.
    monitor = RunMonitor(rubric_texts(recipe.judge))
    heldout = None  # training.eval_every: (slices, rules) of the in-run held-out check
    if tr.eval_every:
        from minirft.train.evaluate import heldout_slices, log_heldout_check, rule_checks

        heldout = (heldout_slices(recipe), rule_checks(recipe))
        if not heldout[0]:
            warn("training.eval_every is set, but the recipe has no held-out set (data.eval_path, data.eval_sets)")
            heldout = None
    limits = LimitNotes(recipe, log, say, context=policy_context(policy))
    status, message = "failed", "crashed"
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        log.write("run_start", start_step, run_name=run_dir.name, recipe=recipe_to_dict(recipe),
                  policy_model=recipe.policy.model, judge_model=recipe.judge.model if recipe.judge else None,
                  total_steps=tr.steps, argv=argv, versions=versions(), device=device_name(policy.device),
                  backend=policy.backend, generation_engine=engine_name(sampler_engine),
                  resumed_from=start_step if resume else None)
        if resume:
            where = (f"checkpoint step-{start_step}" if resume_from is not None
                     else "the beginning (no usable checkpoint; --from-scratch)")
            log.event(start_step, "resume", f"resumed from {where}", from_step=start_step)
        for note in notes:
            log.event(start_step, "warning", note)

        def check_heldout(step: int) -> None:
            for line in log_heldout_check(recipe, policy, *heldout, log, monitor, step):
                say(line)

        if heldout is not None:
            check_heldout(start_step)  # where the held-out measures start
        stream = rollouts(recipe, policy, sampler, reward_fns, judge, engine=sampler_engine)
        # human labels steer the live run: a refitted judge.calibration is picked up between steps
        cal = (calibration_watch.CalibrationWatch(calibration_watch.watched_path(recipe, run_dir),
                                                  loaded_at_start=own_judge and bool(recipe.judge.platt))
               if judge is not None and recipe.judge is not None else None)
        for step in range(start_step + 1, tr.steps + 1):
            t_step = time.perf_counter()
            if cal is not None:
                _follow_calibration(cal, judge, log, step, quiet)
            batch = next(stream)
            for err in batch.judge_errors:
                log.event(step, "judge_error", err)
            for note in batch.engine_notes:
                log.event(step, "warning", note, detector="generation")
                say(f"step {step}/{tr.steps}  warning [generation] {note}")
            limits.check(step, batch, judge)
            t_update = time.perf_counter()
            upd = update(recipe, policy, batch, optimizer, params)
            scheduler.step()
            update_s = time.perf_counter() - t_update
            if upd["skipped"]:
                log.event(step, "nan_skip", f"non-finite {upd['skipped']}: step skipped, adapter unchanged")
            metrics = step_metrics(recipe, batch, upd, lr=optimizer.param_groups[0]["lr"], update_s=update_s,
                                   step_s=time.perf_counter() - t_step)
            if cal is not None and cal.digest is not None:
                metrics["calibration"] = cal.digest  # the judge calibration this step's scores went through
            metrics.update(judge_counters(judge, metrics["judge_s"]))  # cache hits, http requests, judge phases
            log.write("step", step, metrics=metrics)
            for sample in sample_rows(recipe, batch):
                log.write("sample", step, **sample)
            if not quiet:
                print(progress_line(step, tr.steps, metrics), file=sys.stderr, flush=True)
            for alert in monitor.update(step, all_samples(batch), metrics):
                log.event(step, "warning", alert.message, detector=alert.detector, value=alert.value)
                if not quiet:
                    print(f"step {step}/{tr.steps}  warning [{alert.detector}] {alert.message}",
                          file=sys.stderr, flush=True)
            if heldout is not None and (step % tr.eval_every == 0 or step == tr.steps):
                check_heldout(step)
            if step % recipe.checkpoint.every == 0 or step == tr.steps:
                rundir.guard(run_dir, ckpt_root)  # a link put in the run dir since the start is refused too
                try:
                    path = save_checkpoint(ckpt_root, step, policy=policy, optimizer=optimizer, scheduler=scheduler,
                                           state={"data_position": sampler.position},
                                           keep_last=recipe.checkpoint.keep_last)
                except (OSError, RuntimeError) as exc:  # a full disk (torch.save says RuntimeError): the
                    # half-written temp dir is already gone, the previous checkpoint stands
                    raise rundir.write_error(ckpt_root / f"step-{step}", exc, "the checkpoint") from None
                log.event(step, "checkpoint", f"saved {path.relative_to(run_dir)}", path=str(path))
            if on_step is not None:
                on_step(step, metrics)
        with atomic_dir(rundir.guard(run_dir, run_dir / "adapter")) as tmp:
            policy.save_adapter(tmp)
        status, message = "finished", f"{tr.steps} steps; adapter in {run_dir / 'adapter'}"
    except (KeyboardInterrupt, _Stop):
        status, message = "stopped", "interrupted; " + resume_hint(run_dir)
        raise
    except Exception as exc:
        message = failure_message(exc)
        raise
    finally:
        log.write("run_end", tr.steps if status == "finished" else -1, status=status, message=message)
        log.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if own_judge and judge is not None:
            judge.close()
        if sampler_engine is not None:
            sampler_engine.close()
    return run_dir


def resume_hint(run_dir: Path) -> str:
    """How to go on with a stopped run: --resume when it has a checkpoint, else what that would say."""
    if list_checkpoints(Path(run_dir) / "checkpoints"):
        return f"continue with: minirft train --resume {run_dir}"
    return (f"no checkpoint was saved yet (checkpoint.every), so there is nothing to continue from; start it "
            f"again with: minirft train --resume {run_dir} --from-scratch")


def _follow_calibration(cal: "calibration_watch.CalibrationWatch", judge: Judge, log: EventLog, step: int,
                        quiet: bool) -> None:
    """Before a step: if the judge's calibration file changed, hand the judge the new maps and log it."""
    before = cal.digest
    try:
        change = cal.poll()
    except calibration_watch.CalibrationUnreadable as exc:
        log.event(step, "warning", str(exc), detector="calibration")
        return
    except OSError as exc:
        log.event(step, "warning", f"could not read {cal.path}: {exc}", detector="calibration")
        return
    if change is None:
        return
    if not calibration_watch.apply(judge, change.platt):
        cal.digest = before  # still in force: the metrics must not claim the new one
        log.event(step, "warning", f"{cal.path} changed, but this judge cannot take a new calibration mid-run",
                  detector="calibration")
        return
    log.event(step, "calibration", change.message, calibration=change.digest, path=str(cal.path))
    if not quiet:
        print(f"step {step}: {change.message}", file=sys.stderr, flush=True)


def _start_run(recipe: Recipe, run_dir: Path, *, resume: bool, argv: list[str],
               say: Callable[[str], None], overwrite: bool = False) -> EventLog:
    """The run has started (models loaded): write its dir. Nothing before this wrote to it (but the
    lock file); ``overwrite`` removes what an old run left there now. No file written below the run
    dir may be, or be under, a symbolic link (``minirft.rundir.guard``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        rundir.clear(run_dir)
    for name in ("recipe.resolved.yaml", "command.txt", "events.jsonl", "checkpoints", "adapter"):
        rundir.guard(run_dir, run_dir / name)
    # Rewritten on resume too, so an extension (`--resume DIR training.steps=40`) survives the next
    # resume; command.txt keeps every command that ran in this dir, one line each.
    write_text(run_dir / "recipe.resolved.yaml", dump_recipe(recipe))
    command = run_dir / "command.txt"
    before = command.read_text(errors="replace") if resume and command.is_file() else ""
    write_text(command, before + " ".join(argv) + "\n")
    say(f"run dir: {run_dir}")
    return EventLog(run_dir / "events.jsonl", listeners=open_trackers(recipe.logging, run_dir))
def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------------- update
def update(recipe: Recipe, policy: Policy, batch: Batch, optimizer: Any, params: list) -> dict[str, Any]:
    """Loss, backward over micro-batches, clip, optimizer step. Skips the step on a non-finite value."""
    tr, G = recipe.training, batch.group_size
    gen = batch.generated
    n_completion = gen.completion_mask.shape[1]
    keep = batch.valid.clone()
    if batch.dropped is not None:  # dynamic sampling: groups without a reward spread
        keep &= ~batch.dropped
    if recipe.generation.mask_truncated and batch.truncated is not None:
        keep &= ~batch.truncated
    mask_all = gen.completion_mask * keep.to(policy.device).unsqueeze(1).long()
    setup = loss_setup(recipe, mask_all)
    normaliser = setup["normaliser"]
    sums = {"kl_sum": 0.0, "clip_sum": 0.0, "tokens": 0.0, "loss": 0.0, "entropy_sum": 0.0, "entropy_tokens": 0.0}
    skipped: str | None = None
    optimizer.zero_grad(set_to_none=True)
    if normaliser == 0:  # every sample excluded (e.g. the judge failed for the whole batch)
        return {**sums, "skipped": None, "grad_norm": 0.0, "no_signal": True}
    per = tr.micro_batch_prompts * G
    policy.model.train()
    for lo in range(0, gen.input_ids.shape[0], per):
        sl = slice(lo, lo + per)
        ids, att, cmask = gen.input_ids[sl], gen.attention_mask[sl], gen.completion_mask[sl]
        mask = mask_all[sl]
        if mask.sum() == 0:
            continue
        ref = None
        if tr.beta > 0:
            with torch.no_grad(), policy.reference():
                ref, _ = token_logprobs(policy.model, ids, att, n_completion, recipe.generation.temperature)
        logp, entropy = token_logprobs(policy.model, ids, att, n_completion, recipe.generation.temperature,
                                       with_entropy=True)
        is_weight = None
        if gen.sampling_logp is not None:  # sampled by llama.cpp: truncated importance sampling
            is_weight, is_stats = truncated_is_weights(logp, gen.sampling_logp[sl], mask,
                                                       recipe.generation.importance_sampling_cap)
            for k, v in is_stats.items():
                sums[k] = min(sums.get(k, v), v) if k == "is_weight_min" else sums.get(k, 0.0) + v
        loss, stats = grpo_loss(logp, logp.detach(), ref, batch.advantages[sl].to(logp.device), mask,
                                beta=tr.beta, is_weight=is_weight, **setup)
        sums["entropy_sum"] += float((entropy.detach() * cmask).sum())
        sums["entropy_tokens"] += float(cmask.sum())
        if not torch.isfinite(loss):
            skipped = "loss"
            break
        loss.backward()
        sums["loss"] += float(loss.detach())
        for k, v in stats.items():
            sums[k] += v
    grad_norm = 0.0
    if skipped is None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm))
        if not math.isfinite(grad_norm):
            skipped = "gradient"
    if skipped is None:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {**sums, "skipped": skipped, "grad_norm": grad_norm if skipped is None else math.nan}


def default_threads() -> None:
    """Use every core for torch unless the user said otherwise (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
