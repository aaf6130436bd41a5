"""The LLM judge. A recipe's ``judge`` section becomes a :class:`~minirft.judge.base.Judge`:

- criterion methods (:mod:`minirft.judge.methods`): ``question`` (P(yes) read from the label tokens),
  ``contrast`` (the response's likelihood under a positive vs a negative condition) and ``direct``
  (the two conditions' likelihood after the response), each giving P(pass) per criterion;
- modes (:mod:`minirft.judge.modes`): rubric (weighted criteria and gates) and preference (win rates
  within a group: A/B questions in both orders, or contrast and direct scores compared);
- :class:`~minirft.judge.core.GroupJudge`: retries, clipping and Platt maps over one backend
  (:data:`minirft.judge.backends.BACKENDS`: llama_cpp, torch, http), optionally behind the
  ``judge.cache`` SQLite file; :class:`~minirft.judge.panel.PanelJudge`: a jury of them.

``build_judge(cfg)`` returns the judge. Models load lazily on the first call (or ``load()``) and stay
loaded, so calling ``score_groups`` every training step is cheap.
"""

from __future__ import annotations

from minirft.errors import MinirftError
from minirft.judge.base import Evaluator, Judge, PairVerdict, Score
from minirft.recipe import JudgeConfig

__all__ = ["build_judge", "Judge", "PairVerdict", "Score"]


def build_judge(cfg: JudgeConfig, *, defended: bool = True, policy_model=None, policy_tokenizer=None) -> Judge:
    """A judge for ``cfg``. ``defended=False`` drops the prompt-injection defences (benchmarks only).

    ``policy_model``/``policy_tokenizer``: the trainer's (PEFT-wrapped) policy, used only when
    ``judge.self_judge`` is true: the judge is then the policy's base with the adapter disabled.
    With ``judge.panel`` the judge is a jury of one judge per member (:mod:`minirft.judge.panel`).
    """
    if cfg.panel:
        from minirft.judge.panel import PanelJudge

        members = []
        for m in cfg.panel:
            update = {"model": m.model, "panel": [], "backend": m.backend or cfg.backend}
            if m.n_gpu_layers is not None:
                update["n_gpu_layers"] = m.n_gpu_layers
            members.append((m.name or m.model, m.weight, build_judge(cfg.model_copy(update=update), defended=defended)))
        return PanelJudge(cfg, members)
    return _single_judge(cfg, defended, policy_model, policy_tokenizer)


def _single_judge(cfg: JudgeConfig, defended: bool, policy_model, policy_tokenizer) -> Judge:
    from minirft.judge.backends import BACKENDS
    from minirft.judge.core import GroupJudge
    from minirft.judge.prompts import Layout

    if cfg.self_judge and cfg.backend != "torch":
        raise MinirftError("judge.self_judge: true needs judge.backend: torch")
    backend = BACKENDS[cfg.backend]
    ev = backend.evaluator(cfg, policy_model, policy_tokenizer)
    fmt = backend.prompt_format(cfg, ev)
    return GroupJudge(cfg, _cached(cfg, ev, backend.cache_identity), Layout(cfg, fmt, defended))


def _cached(cfg: JudgeConfig, ev: Evaluator, identity) -> Evaluator:
    """The backend behind judge.cache (SQLite) when the recipe names one."""
    if not cfg.cache:
        return ev
    from minirft.judge.cache import CachedEvaluator

    return CachedEvaluator(ev, cfg.cache, identity(cfg))
