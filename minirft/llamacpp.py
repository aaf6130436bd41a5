"""The one layer over llama-cpp-python's low-level API that the judge backend
(:mod:`minirft.judge.backends.llama_cpp`) and the rollout engine (:mod:`minirft.train.llama_rollout`)
share: importing it quietly, the build's CPU features, loading a GGUF, creating and closing a context,
a token batch (fill, decode, free) and the KV-cache sequence operations under whichever names this
llama-cpp-python has (``llama_kv_cache_seq_cp`` became ``llama_memory_seq_cp`` on a memory handle in
0.3.10).

What each caller decides stays with it: the context's size and sequence count, the KV cache's layout
(unified or one stream per sequence) and type, how many logits rows a decode returns, and the error
text a user sees (each names its own recipe key).
"""

from __future__ import annotations

from typing import Any, Sequence

from minirft.errors import MinirftError


def load_api(need: str) -> tuple[Any, Any]:
    """``(llama_cpp, llama_cpp._internals)``, the backend initialised and llama.cpp's per-load log
    silenced (hundreds of lines otherwise). ``need`` names who needs it, for the error when it is missing."""
    try:
        import llama_cpp
        from llama_cpp import _internals, _logger
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MinirftError(f"{need} needs llama-cpp-python ({exc}): pip install llama-cpp-python") from None
    _logger.set_verbose(False)
    llama_cpp.llama_backend_init()
    return llama_cpp, _internals


def cpu_features() -> list[str]:
    """The SIMD extensions llama.cpp was compiled for ("AVX2", "AVX512_BF16", ...): the portable build
    has AVX2 at most, scripts/setup.sh's native build what this CPU has; [] without llama-cpp-python."""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - not installed, or a version without it
        return []
    return [k.split(":")[-1].strip() for k, _, v in (p.partition("=") for p in info.split("|"))
            if v.strip() == "1" and k.split(":")[-1].strip().startswith(("AVX", "AMX", "SSE", "F16C", "FMA"))]


def load_model(api: tuple[Any, Any], path: str, n_gpu_layers: int) -> Any:
    """A GGUF as an ``_internals.LlamaModel`` (raises ValueError or RuntimeError when llama.cpp cannot
    load it: the caller words the error)."""
    llama_cpp, internals = api
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = n_gpu_layers
    return internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)


def new_context(api: tuple[Any, Any], model: Any, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int,
                kv_unified: bool, n_outputs_max: int, flash_attn: bool = True, kv_f32: bool = False,
                swa_full: bool | None = None) -> Any:
    """An ``_internals.LlamaContext`` (raises ValueError when llama.cpp refuses it).

    ``kv_unified``: one KV cache whose cells carry the ids of every sequence that shares them (a shared
    prefix stored once), else one stream per sequence. ``n_outputs_max``: logits rows one decode may
    return (llama.cpp reserves ``n_seq_max`` rows at creation, so callers keep it at least that).
    ``flash_attn=False`` turns flash attention off (the CPU kernel rounds Q to f16); ``kv_f32`` an f32
    KV cache; ``swa_full`` (when not None) whether sliding-window layers keep the full context. The
    fields a llama-cpp-python version lacks are left at its defaults."""
    llama_cpp, internals = api
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_batch
    cparams.n_seq_max = n_seq_max
    cparams.n_threads = n_threads
    cparams.n_threads_batch = n_threads
    if not flash_attn:
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    if hasattr(cparams, "kv_unified"):
        cparams.kv_unified = kv_unified
    if hasattr(cparams, "n_outputs_max"):
        cparams.n_outputs_max = n_outputs_max
    if swa_full is not None and hasattr(cparams, "swa_full"):
        cparams.swa_full = swa_full
    if kv_f32:
        cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
    cparams.no_perf = True
    return internals.LlamaContext(model=model, params=cparams, verbose=False)


class Memory:
    """KV-cache sequence operations on a context, under whichever names this llama-cpp-python has."""

    def __init__(self, llama_cpp: Any, ctx: Any) -> None:
        if hasattr(llama_cpp, "llama_get_memory") and hasattr(llama_cpp, "llama_memory_seq_cp"):
            self._mem = llama_cpp.llama_get_memory(ctx)
            self._cp, self._rm = llama_cpp.llama_memory_seq_cp, llama_cpp.llama_memory_seq_rm
            self._clear = lambda: llama_cpp.llama_memory_clear(self._mem, True)
        elif hasattr(llama_cpp, "llama_kv_cache_seq_cp"):  # llama-cpp-python < 0.3.10
            self._mem = ctx
            self._cp, self._rm = llama_cpp.llama_kv_cache_seq_cp, llama_cpp.llama_kv_cache_seq_rm
            self._clear = lambda: llama_cpp.llama_kv_cache_clear(ctx)
        else:  # pragma: no cover
            raise MinirftError("this llama-cpp-python has neither llama_memory_seq_cp nor llama_kv_cache_seq_cp")

    def cp(self, src: int, dst: int, end: int = -1) -> None:
        """Give ``dst`` the cells of ``src`` at positions below ``end`` (all when -1)."""
        self._cp(self._mem, src, dst, -1, end)

    def rm(self, seq: int) -> None:
        """Drop every cell of ``seq`` (of every sequence when -1)."""
        self._rm(self._mem, seq, -1, -1)

    def clear(self) -> None:
        """Empty the cache."""
        self._clear()


class Batch:
    """A ``llama_batch`` of up to ``n_tokens`` tokens, each in up to ``n_seq_max`` sequences."""

    def __init__(self, llama_cpp: Any, n_tokens: int, n_seq_max: int) -> None:
        self._l = llama_cpp
        self._b = llama_cpp.llama_batch_init(n_tokens, 0, n_seq_max)

    def decode(self, ctx: Any, items: Sequence[tuple[int, int, Any, bool]], hint: str = "") -> None:
        """Decode (token, pos, seq, wants_logits) items (at most ``n_tokens``); ``seq`` is a sequence id
        or a tuple of them (a token shared by several sequences: decoded once, stored once).
        ``hint`` is appended to the error when llama_decode fails."""
        b = self._b
        for i, (tok, pos, seq, want) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            if isinstance(seq, int):
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
            else:
                b.n_seq_id[i] = len(seq)
                for k, s in enumerate(seq):
                    b.seq_id[i][k] = s
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(items)
        rc = self._l.llama_decode(ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}{hint}")

    def free(self) -> None:
        if self._b is not None:
            self._l.llama_batch_free(self._b)
            self._b = None
