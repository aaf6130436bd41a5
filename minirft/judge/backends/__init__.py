"""Judge backends, one :class:`minirft.judge.base.Evaluator` each, registered in :data:`BACKENDS`:
``llama_cpp`` (a GGUF in-process, the default), ``torch`` (a Hugging Face model, or the policy's own
base) and ``http`` (an OpenAI-compatible server).

Each entry says how to build the evaluator for a ``judge`` section, which prompt format its queries
are written in (``judge.prompt_format``, ``auto`` resolved from the model's chat template), and the
model identity ``judge.cache`` keys its results by. The backend modules are imported only when used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

from minirft.errors import MinirftError
from minirft.judge.base import Evaluator
from minirft.judge.prompts import detect_format
from minirft.recipe import JudgeConfig


@dataclass(frozen=True)
class Backend:
    # (judge section, policy model, policy tokenizer) -> the evaluator (the policy only for self_judge)
    evaluator: Callable[[JudgeConfig, Any, Any], Evaluator]
    # (judge section, the evaluator) -> "plain", "chatml" or "gemma"
    prompt_format: Callable[[JudgeConfig, Evaluator], str]
    # judge section -> what judge.cache keys a result by (a changed model file: new keys)
    cache_identity: Callable[[JudgeConfig], str]


# ---------------------------------------------------------------------------------------- llama_cpp
def _llama_evaluator(cfg: JudgeConfig, policy_model: Any, policy_tokenizer: Any) -> Evaluator:
    from minirft.judge.backends.llama_cpp import LlamaEvaluator
    from minirft.models import resolve_model

    model = resolve_model(cfg.model)
    if not model.is_gguf:
        raise MinirftError(f"judge.model '{cfg.model}': the llama_cpp backend needs a .gguf file "
                           "(a Hugging Face folder needs backend: torch)")
    return LlamaEvaluator(str(model.path), n_ctx=cfg.n_ctx, n_batch=cfg.n_batch, n_threads=cfg.n_threads,
                          n_gpu_layers=cfg.n_gpu_layers, max_seqs=cfg.max_seqs, deterministic=cfg.deterministic)


def _llama_format(cfg: JudgeConfig, ev: Any) -> str:
    return detect_format(_chat_template(ev.model_path)) if cfg.prompt_format == "auto" else cfg.prompt_format


def _chat_template(path) -> str:
    """The GGUF's chat template, read from its metadata without loading the weights (nor, as
    gguf.GGUFReader would, every field: +690 MB peak RSS and 11-35 s on Gemma-3's 262k vocabulary)."""
    from minirft.gguf_meta import read_string

    try:
        return read_string(path, "tokenizer.chat_template") or ""
    except (OSError, ValueError):  # an unreadable template means plain text prompts
        return ""


def _local_identity(cfg: JudgeConfig) -> str:
    from minirft.judge.cache import model_identity
    from minirft.models import resolve_model

    return model_identity(str(resolve_model(cfg.model).path), f"{cfg.backend}|{cfg.dtype}")


# ---------------------------------------------------------------------------------------- torch
def _torch_evaluator(cfg: JudgeConfig, policy_model: Any, policy_tokenizer: Any) -> Evaluator:
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


def _torch_format(cfg: JudgeConfig, ev: Any) -> str:
    return detect_format(ev.chat_template()) if cfg.prompt_format == "auto" else cfg.prompt_format


def _torch_identity(cfg: JudgeConfig) -> str:
    from minirft.judge.cache import model_identity

    return model_identity("self_judge:" + cfg.model) if cfg.self_judge else _local_identity(cfg)


# ---------------------------------------------------------------------------------------- http
def _http_evaluator(cfg: JudgeConfig, policy_model: Any, policy_tokenizer: Any) -> Evaluator:
    from minirft.judge.backends.http import HttpEvaluator

    _http_format(cfg, None)  # a wrong prompt_format is refused before anything is built
    return HttpEvaluator(cfg.http, cfg.model)


def _http_format(cfg: JudgeConfig, ev: Any) -> str:
    if cfg.http.api == "chat":  # written in ChatML, split into messages; the server applies its template
        if cfg.prompt_format not in ("auto", "chatml"):
            raise MinirftError("judge.prompt_format: the http chat api needs chatml or auto")
        return "chatml"
    return "plain" if cfg.prompt_format == "auto" else cfg.prompt_format


def _http_identity(cfg: JudgeConfig) -> str:
    from minirft.judge.cache import model_identity

    return model_identity(f"{cfg.http.url}|{cfg.http.model or cfg.model}", cfg.http.api)


BACKENDS: dict[str, Backend] = {
    "llama_cpp": Backend(_llama_evaluator, _llama_format, _local_identity),
    "torch": Backend(_torch_evaluator, _torch_format, _torch_identity),
    "http": Backend(_http_evaluator, _http_format, _http_identity),
}
