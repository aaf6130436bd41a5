"""The default backend: a GGUF judge in-process through llama.cpp's low-level API, batched, with
shared prefixes evaluated once.

A judge query is a *path* of text segments, shared-part first::

    header (system + rubric + few-shot)  →  row prompt  →  candidate  →  question + verdict cue

Many queries share their leading segments (every query shares the header; the G completions of a
row share the row prompt; the criteria of one candidate share the candidate). :meth:`Engine.run`
arranges the queries of one call as a trie and decodes every trie node exactly once per chunk of
``max_seqs`` queries:

* the header lives in sequence 0 and stays cached across calls (the trainer scores every step
  with the same rubric, so after the first step the header costs nothing);
* each query of a chunk gets its own sequence ``1..max_seqs``; a node shared by several queries is
  decoded in the first of them and its KV cache is copied (``llama_memory_seq_cp``) to the others;
* the nodes of one trie level are decoded together in one ``llama_decode`` batch, and logits are
  requested only at the last token of each query (never ``logits_all``: with a 262k vocabulary
  that is 5–14× slower).

Numerics. The context uses one KV stream per sequence (``kv_unified=False``) and no flash
attention, so a query never attends to another query's cells. Its logits still depend on how
many rows each matrix product had: llama.cpp's CPU kernels pick different code paths (repacked
4-row GEMM vs GEMV for quantized weights, tiled GEMM vs dot products for f16) with different
summation orders, and a quantized 270M model turns that into visible probability differences.
Measured on Gemma-3-270M Q4_K_M: batched vs one-at-a-time |ΔP| up to 0.066 (turning repacking off
still gave 0.041, and a unified KV cache with multi-sequence tokens was no faster on 2 cores, so
no batch layout we tried makes them equal); on an f32 model they agree to 1e-6.
:data:`BATCH_TOLERANCE` states the bound that tests check. ``deterministic=True`` decodes one
query at a time in a fixed chunking, so its scores are bit-identical whatever else is in the call
(and equal to the one-at-a-time scores).

The llama-cpp-python API changed names over versions (``llama_kv_cache_seq_cp`` became
``llama_memory_seq_cp`` on a memory handle); :class:`_Memory` detects what is present.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from minirft.errors import MinirftError
from minirft.judge import scoring
from minirft.judge.backends.tokens import TokenCache, cut_at_stop, reached_stop
from minirft.judge.base import Evaluation, Query, TokenScores


BATCH_TOLERANCE = 0.1  # max |ΔP(yes)| between batched and one-at-a-time scores on a quantized model


def _llama():
    try:
        import llama_cpp
        from llama_cpp import _internals
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MinirftError(f"the llama_cpp judge backend needs llama-cpp-python ({exc}): pip install llama-cpp-python") from None
    return llama_cpp, _internals


class _Memory:
    """KV-cache sequence operations under whichever names this llama-cpp-python has."""

    def __init__(self, llama_cpp, ctx) -> None:
        self._l = llama_cpp
        if hasattr(llama_cpp, "llama_get_memory") and hasattr(llama_cpp, "llama_memory_seq_cp"):
            self._mem = llama_cpp.llama_get_memory(ctx)
            self._cp, self._rm = llama_cpp.llama_memory_seq_cp, llama_cpp.llama_memory_seq_rm
        elif hasattr(llama_cpp, "llama_kv_cache_seq_cp"):  # llama-cpp-python < 0.3.10
            self._mem = ctx
            self._cp, self._rm = llama_cpp.llama_kv_cache_seq_cp, llama_cpp.llama_kv_cache_seq_rm
        else:  # pragma: no cover
            raise MinirftError("this llama-cpp-python has neither llama_memory_seq_cp nor llama_kv_cache_seq_cp")

    def cp(self, src: int, dst: int) -> None:
        self._cp(self._mem, src, dst, -1, -1)

    def rm(self, seq: int) -> None:
        self._rm(self._mem, seq, -1, -1)


@dataclass
class Result:
    logits: np.ndarray | None = None  # logits at the verdict position, for the requested token ids
    text: str = ""  # generated text when Query.generate > 0
    first: int | None = None  # greedy first token after the cue (starts the generation)
    token_logprobs: np.ndarray | None = None  # score_last queries: log P of each token of the last segment


@dataclass
class EngineStats:
    """Counters that tests and benchmarks read: prefix sharing must show up as fewer decoded tokens."""

    tokens_decoded: int = 0
    decode_calls: int = 0
    header_reuses: int = 0
    queries: int = 0
    per_query_tokens: int = 0  # what one-prompt-per-query evaluation would have decoded
    logit_rows: int = 0  # logits rows read (verdicts, scored tokens, generated tokens)
    extra: dict = field(default_factory=dict)


class Engine:
    """A GGUF model with a multi-sequence context, evaluated as a trie of shared prefixes."""

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        max_seqs: int = 16,
        deterministic: bool = False,
    ) -> None:
        llama_cpp, internals = _llama()
        self._l = llama_cpp
        self._internals = internals
        from llama_cpp import _logger

        _logger.set_verbose(False)  # llama.cpp prints hundreds of lines per load otherwise
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        try:
            self.model = internals.LlamaModel(path_model=str(model_path), params=mparams, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise MinirftError(f"judge model {model_path}: llama.cpp could not load it ({exc})") from None
        self.max_seqs = max_seqs
        self.n_seq = max_seqs + 1  # sequence 0 holds the header
        self.n_batch = n_batch
        self.deterministic = deterministic
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self.context = None
        self.ctx = None
        self.n_ctx_cap = n_ctx  # judge.n_ctx: the most tokens one query may have
        self.n_ctx_seq = 0  # context per sequence (each has its own KV stream), sized by _ensure_context
        self.n_vocab = self.model.n_vocab()
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._header: tuple[int, ...] | None = None
        self.tokenize = TokenCache(lambda text, bos: self.model.tokenize(text.encode("utf-8"), bos, True))
        self.stats = EngineStats()
        self.add_bos = bool(self.model.add_bos_token())

    def _ensure_context(self, need: int) -> None:
        """(Re)create the context so every sequence has room for ``need`` tokens.

        With one KV stream per sequence, llama.cpp attends over every stream's full size on every
        decode, so a context sized to the longest query (not to judge.n_ctx) is several times faster.
        It grows when a longer query arrives (the cached header is then decoded again).
        """
        if need > self.n_ctx_cap:
            raise RuntimeError(f"judge query is {need} tokens; judge.n_ctx is {self.n_ctx_cap}")
        if self.context is not None and need <= self.n_ctx_seq:
            return
        size = min(self.n_ctx_cap, max(512, -(-int(need * 1.25) // 256) * 256))
        if self.deterministic:
            size = self.n_ctx_cap  # a fixed shape: the numerics must not depend on the longest query of a call
        l = self._l
        if self.context is not None:
            self.context.close()
            self.context = None
        cparams = l.llama_context_default_params()
        cparams.n_ctx = size * self.n_seq
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.n_seq
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = l.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if hasattr(cparams, "kv_unified"):
            cparams.kv_unified = False  # one stream per sequence: a query's scores never see another's cells
        if hasattr(cparams, "n_outputs_max"):
            cparams.n_outputs_max = self.n_batch  # 0 means a default that can be below a batch's outputs
        if hasattr(cparams, "swa_full"):
            cparams.swa_full = False  # sliding-window layers keep only their window: much less memory
        cparams.no_perf = True
        try:
            self.context = self._internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        except ValueError as exc:
            raise MinirftError(f"judge model {self.model.path_model}: could not create a context ({exc}); "
                               "lower judge.n_ctx or judge.max_seqs") from None
        self.ctx = self.context.ctx
        self.mem = _Memory(l, self.ctx)
        self.n_ctx_seq = size
        self._header = None
        self.stats.extra["contexts"] = self.stats.extra.get("contexts", 0) + 1

    # ---------------------------------------------------------------------------- tokens
    def single_token(self, text: str) -> int | None:
        ids = self.model.tokenize(text.encode("utf-8"), False, False)
        return ids[0] if len(ids) == 1 else None

    def chat_template(self) -> str:
        try:
            raw = self._l.llama_model_chat_template(self.model.model, None)
        except Exception:  # noqa: BLE001 - absent in some versions
            return ""
        return raw.decode("utf-8", errors="replace") if raw else ""

    # ---------------------------------------------------------------------------- decode
    def _decode(self, items: list[tuple[int, int, int, Any]]) -> None:
        """Decode (token, pos, seq, take) items in n_batch pieces. ``take`` is None (no logits) or a callable
        given that position's logits row, at once: llama.cpp keeps logits only until the next decode, and
        the callable reads what it needs from the row in place (a 262k-entry row is never copied per
        position)."""
        b = self._batch
        for start in range(0, len(items), self.n_batch):
            piece = items[start:start + self.n_batch]
            for i, (tok, pos, seq, take) in enumerate(piece):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = 0 if take is None else 1
            b.n_tokens = len(piece)
            rc = self._l.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (context full? raise judge.n_ctx)")
            self.stats.tokens_decoded += len(piece)
            self.stats.decode_calls += 1
            for i, (_, _, _, take) in enumerate(piece):
                if take is not None:
                    take(self._logits_row(i))
                    self.stats.logit_rows += 1

    def _logits_row(self, row: int) -> np.ndarray:
        ptr = self._l.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _set_header(self, header: tuple[int, ...]) -> None:
        if self._header == header:
            self.stats.header_reuses += 1
            return
        for s in range(self.n_seq):
            self.mem.rm(s)
        self._header = None
        self._decode([(t, p, 0, None) for p, t in enumerate(header)])
        self._header = header

    # ---------------------------------------------------------------------------- run
    def run(self, queries: Sequence[Query], want: Sequence[int]) -> list[Result]:
        """Evaluate ``queries``; each result holds the logits of the token ids ``want`` at its cue, or, for
        a query with ``score_last``, the log-probability of every token of its last segment.

        All queries must share ``segments[0]`` (the header).
        """
        if not queries:
            return []
        headers = {q.segments[0] for q in queries}
        if len(headers) != 1:
            raise ValueError("all queries of one run must share the header segment")
        header = self.tokenize(queries[0].segments[0], bos=self.add_bos)
        want_ids = np.asarray(want, dtype=np.int64)
        # Tokenize segments separately: the tokens of a shared segment are then identical in every query.
        toks = [[self.tokenize(s) for s in q.segments[1:]] for q in queries]
        for q, t in zip(queries, toks):
            if q.score_last and (len(t) < 2 or not t[-1] or not t[-2]):
                raise ValueError("a score_last query needs non-empty last and second-to-last segments")
        lengths = [len(header) + sum(map(len, t)) for t in toks]
        self._ensure_context(max(n + q.generate for n, q in zip(lengths, queries)))
        self._set_header(header)
        self.stats.per_query_tokens += sum(lengths)
        self.stats.queries += len(queries)
        results: list[Result] = [Result() for _ in queries]
        chunk = 1 if self.deterministic else self.max_seqs
        for start in range(0, len(queries), chunk):
            idx = list(range(start, min(start + chunk, len(queries))))
            self._run_chunk([queries[i] for i in idx], [toks[i] for i in idx], header,
                            want_ids, [results[i] for i in idx])
        return results

    def _run_chunk(self, queries, toks, header, want_ids, results) -> None:
        n = len(queries)
        seqs = list(range(1, n + 1))
        for s in seqs:
            self.mem.cp(0, s)
        pos = [len(header)] * n
        depth = max(len(t) for t in toks)
        scored = {m: np.zeros(len(t[-1])) for m, (q, t) in enumerate(zip(queries, toks)) if q.score_last}
        try:
            for d in range(depth):
                # Group queries by their path up to and including level d: one decode per distinct node.
                groups: dict[tuple, list[int]] = {}
                for i, t in enumerate(toks):
                    if d < len(t):
                        groups.setdefault(tuple(t[: d + 1]), []).append(i)
                items: list[tuple[int, int, int, Any]] = []
                for key, members in groups.items():
                    first = members[0]
                    seg = key[-1]
                    for j, tok in enumerate(seg):
                        items.append((tok, pos[first] + j, seqs[first],
                                      self._take(d, j, seg, members, queries, toks, want_ids, results, scored)))
                if not items:
                    continue
                self._decode(items)
                for key, members in groups.items():
                    first = members[0]
                    for m in members:
                        pos[m] += len(key[-1])
                    for m in members[1:]:
                        # Members share everything up to this level: copy the owner's cache (levels < d were
                        # already copied, so drop the member's own copy first).
                        self.mem.rm(seqs[m])
                        self.mem.cp(seqs[first], seqs[m])
            for m, lps in scored.items():
                results[m].token_logprobs = lps
            self._generate(queries, results, seqs, pos)
        finally:
            for s in seqs:
                self.mem.rm(s)

    @staticmethod
    def _take(d, j, seg, members, queries, toks, want_ids, results, scored):
        """What to read from the logits at position ``j`` of the level-``d`` node ``seg`` (shared by
        ``members``): the verdict row of queries ending here, and the log-probability of the next token
        for score_last queries whose scored segment is this one or the next."""
        last = j == len(seg) - 1
        verdict = [m for m in members if last and d == len(toks[m]) - 1 and not queries[m].score_last]
        inside = [m for m in members if m in scored and d == len(toks[m]) - 1 and not last]
        before = [m for m in members if m in scored and d == len(toks[m]) - 2 and last]
        if not (verdict or inside or before):
            return None

        def take(row: np.ndarray) -> None:
            if verdict:
                chosen = row[want_ids].astype(np.float64)
                for m in verdict:
                    results[m].logits = chosen
                    if queries[m].generate:
                        results[m].first = int(np.argmax(row))
            if inside or before:
                top = float(row.max())
                lse = top + math.log(float(np.exp(row - top).sum(dtype=np.float64)))  # float32 exp, float64 sum
                for m in inside:  # token j + 1 of the scored segment
                    scored[m][j + 1] = float(row[seg[j + 1]]) - lse
                for m in before:  # token 0 of the scored segment that follows
                    scored[m][0] = float(row[toks[m][-1][0]]) - lse
        return take

    def _generate(self, queries, results, seqs, pos) -> None:
        """Greedy continuation, one token per active sequence per decode (rationales)."""
        active = [i for i, q in enumerate(queries) if q.generate]
        out: dict[int, list[int]] = {i: [] for i in active}
        nxt = {i: results[i].first for i in active}
        eog = self._l.llama_vocab_is_eog
        while active:
            still = []
            for i in active:
                tok = nxt[i]
                if eog(self.model.vocab, tok):
                    continue
                out[i].append(tok)
                text = self.model.detokenize(out[i]).decode("utf-8", errors="ignore")
                if len(out[i]) >= queries[i].generate or reached_stop(text, queries[i].stop):
                    continue
                still.append(i)
            active = still
            if not active:
                break

            def greedy(i):
                def take(row: np.ndarray) -> None:
                    nxt[i] = int(np.argmax(row))
                return take

            self._decode([(nxt[i], pos[i], seqs[i], greedy(i)) for i in active])
            for i in active:
                pos[i] += 1
        for i, toks in out.items():
            results[i].text = cut_at_stop(self.model.detokenize(toks).decode("utf-8", errors="replace"),
                                          queries[i].stop)

    def close(self) -> None:
        if self._batch is not None:
            self._l.llama_batch_free(self._batch)
            self._batch = None
        if self.context is not None:
            self.context.close()
            self.context = None
        self.model.close()


class LlamaEvaluator:
    """Label probabilities from :class:`Engine` logits. The model loads on first use, once."""

    def __init__(self, model_path: str, *, n_ctx: int, n_batch: int, n_threads: int | None,
                 n_gpu_layers: int, max_seqs: int, deterministic: bool) -> None:
        self.model_path = model_path
        self._kw = dict(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                        max_seqs=max_seqs, deterministic=deterministic)
        self._engine: Engine | None = None
        self._ids: dict[tuple, list[list[int]]] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.model_path, **self._kw)
        return self._engine

    def label_ids(self, classes: Sequence[tuple[str, ...]]) -> list[list[int]]:
        """Token ids of each class's single-token surface forms (e.g. "Yes", " Yes", "yes")."""
        key = tuple(classes)
        if key not in self._ids:
            ids = []
            for forms in classes:
                found = sorted({t for t in (self.engine.single_token(f) for f in forms) if t is not None})
                if not found:
                    raise MinirftError(f"judge model {self.model_path}: none of {list(forms)} is a single token; "
                                       "this model cannot be used as a judge with these labels")
                ids.append(found)
            self._ids[key] = ids
        return self._ids[key]

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        ids = self.label_ids(classes)
        flat = [t for group in ids for t in group]
        bounds = np.cumsum([0] + [len(g) for g in ids])
        out = []
        for res in self.engine.run(queries, flat):
            probs = scoring.class_probs([res.logits[bounds[c]:bounds[c + 1]] for c in range(len(ids))])
            out.append(Evaluation(probs, res.text))
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Per ``score_last`` query: log P of each token of its last segment, and the tokens' text."""
        eng = self.engine
        out = []
        for q, res in zip(queries, eng.run(queries, [])):
            ids = eng.tokenize(q.segments[-1])
            pieces = tuple(eng.model.detokenize([t]).decode("utf-8", errors="replace") for t in ids)
            out.append(TokenScores(res.token_logprobs, pieces))
        return out
