"""The LLM judge: rubric (P(yes) per criterion) and preference (swap-averaged A vs B) modes.

``build_judge(cfg)`` returns an object with the protocol of :mod:`minirft.judge.base`. Models load
lazily on the first call and stay loaded, so calling ``score_groups`` every training step is cheap.
"""

from __future__ import annotations

from minirft.errors import MinirftError
from minirft.judge.base import Judge, PairVerdict, Score
from minirft.recipe import JudgeConfig

__all__ = ["build_judge", "Judge", "PairVerdict", "Score"]


def build_judge(cfg: JudgeConfig, *, defended: bool = True, policy_model=None, policy_tokenizer=None) -> "Judge":
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


def _single_judge(cfg: JudgeConfig, defended: bool, policy_model, policy_tokenizer) -> "Judge":
    from minirft.judge.core import GroupJudge
    from minirft.judge.prompts import Layout, detect_format

    if cfg.self_judge and cfg.backend != "torch":
        raise MinirftError("judge.self_judge: true needs judge.backend: torch")
    if cfg.backend == "torch":
        ev = _torch_evaluator(cfg, policy_model, policy_tokenizer)
        fmt = cfg.prompt_format
        if fmt == "auto":
            fmt = detect_format(ev.chat_template())
        return GroupJudge(cfg, _cached(cfg, ev), Layout(cfg, fmt, defended))
    if cfg.backend == "http":
        from minirft.judge.backends.http import HttpEvaluator

        if cfg.http.api == "chat":  # written in ChatML, split into messages; the server applies its template
            if cfg.prompt_format not in ("auto", "chatml"):
                raise MinirftError("judge.prompt_format: the http chat api needs chatml or auto")
            fmt = "chatml"
        else:
            fmt = "plain" if cfg.prompt_format == "auto" else cfg.prompt_format
        return GroupJudge(cfg, _cached(cfg, HttpEvaluator(cfg.http, cfg.model)), Layout(cfg, fmt, defended))

    from minirft.judge.backends.llama_cpp import LlamaEvaluator
    from minirft.models import resolve_model

    model = resolve_model(cfg.model)
    if not model.is_gguf:
        raise MinirftError(f"judge.model '{cfg.model}': the llama_cpp backend needs a .gguf file "
                           "(a Hugging Face folder needs backend: torch)")
    ev = LlamaEvaluator(str(model.path), n_ctx=cfg.n_ctx, n_batch=cfg.n_batch, n_threads=cfg.n_threads,
                        n_gpu_layers=cfg.n_gpu_layers, max_seqs=cfg.max_seqs, deterministic=cfg.deterministic)
    fmt = cfg.prompt_format
    if fmt == "auto":
        fmt = detect_format(_chat_template(model.path))
    return GroupJudge(cfg, _cached(cfg, ev), Layout(cfg, fmt, defended))


def _cached(cfg: JudgeConfig, ev):
    """The backend behind judge.cache (SQLite) when the recipe names one."""
    if not cfg.cache:
        return ev
    from minirft.judge.cache import CachedEvaluator, model_identity

    if cfg.backend == "http":
        identity = model_identity(f"{cfg.http.url}|{cfg.http.model or cfg.model}", cfg.http.api)
    elif cfg.self_judge:
        identity = model_identity("self_judge:" + cfg.model)
    else:
        from minirft.models import resolve_model

        identity = model_identity(str(resolve_model(cfg.model).path), f"{cfg.backend}|{cfg.dtype}")
    return CachedEvaluator(ev, cfg.cache, identity)


def _chat_template(path) -> str:
    """The GGUF's chat template, read from its metadata without loading the weights (nor, as
    gguf.GGUFReader would, every field: +690 MB peak RSS and 11-35 s on Gemma-3's 262k vocabulary)."""
    from minirft.gguf_meta import read_string

    try:
        return read_string(path, "tokenizer.chat_template") or ""
    except (OSError, ValueError):  # an unreadable template means plain text prompts
        return ""


def _torch_evaluator(cfg: JudgeConfig, policy_model, policy_tokenizer):
    import contextlib

    from minirft.judge.backends.torch import TorchEvaluator, load_hf_judge
    from minirft.models import resolve_model

    if cfg.self_judge:
        if policy_model is None or policy_tokenizer is None:
            raise MinirftError("judge.self_judge: true needs the policy model: build_judge(cfg, "
                               "policy_model=..., policy_tokenizer=...) (the trainer passes them)")
        disable = getattr(policy_model, "disable_adapter", None)  # a PEFT model; a plain one is its own base
        return TorchEvaluator(policy_model, policy_tokenizer, context=disable or contextlib.nullcontext,
                              max_batch=cfg.max_seqs, name="the policy's base (self_judge)")
    model = resolve_model(cfg.model)
    path, gguf = (str(model.path.parent), model.path.name) if model.is_gguf else (str(model.path), None)
    return TorchEvaluator(loader=lambda: load_hf_judge(path, gguf_file=gguf, device=cfg.device, dtype=cfg.dtype,
                                                       load_in_4bit=cfg.load_in_4bit),
                          max_batch=cfg.max_seqs, name=str(model.path))
