"""The default backend: a GGUF judge in-process through llama.cpp's low-level API, batched, with
shared prefixes evaluated once.

A judge query is a *path* of text segments, shared-part first::

    header (system + rubric + few-shot)  →  row prompt  →  candidate  →  question + verdict cue

Many queries share their leading text (every query shares the header; the G completions of a row
share the row prompt; the criteria of one candidate share the candidate and the cue's first words).
A query's text after the header is tokenized as one prompt (a ``score_last`` query's scored segment
on its own), and :meth:`Engine.run` sorts the queries of one call into a *token* trie and decodes
every distinct token prefix exactly once per call: never more tokens than a one-prompt-at-a-time
loop with prefix reuse evaluates after the same header, in whatever order that loop runs.

* the header lives in sequence 0 and stays cached across calls (the trainer scores every step
  with the same rubric, so after the first step the header costs nothing);
* the KV cache is unified (``kv_unified=True``): a cell carries the ids of every sequence that
  shares it, so a shared node is decoded once with all its queries' sequence ids and stored once
  (no per-sequence copies of a long prefix, no stream sized to the longest query);
* queries run in chunks (:class:`Plan`) of at most ``max_seqs`` queries and about one query's worth
  of cells, because every token attends over every cell in use; a chunk's trie goes in one decode
  (pieces of n_batch tokens, a parent before its children), the token prefix it shares with the next
  chunk (a row whose completions span two chunks) is held in sequence 1 rather than decoded again;
* logits are requested only at the last token of each query (never ``logits_all``: with a 262k
  vocabulary that is 5–14× slower);
* rationales (greedy generation) keep their sequences until one loop generates for all of them at
  the end of the call, one token per sequence per decode.

Numerics. Masked attention keeps a query to its own cells (masked cells contribute exact zeros).
Its logits still depend on the batch shapes: llama.cpp's CPU kernels pick different code paths
(repacked 4-row GEMM vs GEMV for quantized weights, tiled GEMM vs dot products for f16 and for the
f16 KV cache) with different summation and rounding, and a quantized 270M model turns that into
visible probability differences. Measured on Gemma-3-270M Q4_K_M (per-stream layout): batched vs
one-at-a-time |ΔP| up to 0.066; :data:`BATCH_TOLERANCE` states the bound the tests check. On an f32
model with the f16 KV cache, token log-probs agree to ~1e-3 (6e-6 with an f32 KV cache). The same
set of queries is laid out the same way in any order, so its numbers do not depend on the order.
``deterministic=True`` keeps the old layout — one KV stream per sequence, one query at a time — so
its scores are bit-identical whatever else is in the call (and equal to the one-at-a-time scores).

Loading, contexts, batches and the KV-cache sequence operations (under whichever names this
llama-cpp-python has) are :mod:`minirft.llamacpp`'s, shared with the rollout engine.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from minirft import llamacpp
from minirft.errors import MinirftError
from minirft.judge import scoring
from minirft.judge.backends.tokens import TokenCache, cut_at_stop, reached_stop
from minirft.judge.base import Evaluation, EvaluatorBase, Query, TokenScores


BATCH_TOLERANCE = 0.1  # max |ΔP(yes)| between batched and one-at-a-time scores on a quantized model
MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: in a unified KV cache a sequence id is only a label on cells
HEADER_SEQ, HOLD_SEQ = 0, 1  # the cached header; a prefix held from one chunk for the next
# Every token of a chunk attends over all cells in use (masked attention): on Gemma-3-270M each 1,000
# cells cost ~1.8 ms per token on top of ~2.4 ms of weights, so chunks stay near one query's size.
CHUNK_CELLS = 256  # KV cells a chunk may use besides the header (at least 1.25x its longest query)
KEEP_CELLS = 1024  # cells kept for rationales before their generation loop runs (at least one chunk's budget)
# Logits rows one llama_decode may return. llama.cpp's output buffer holds that many rows of the
# vocabulary (262k floats = 1 MiB a row for Gemma-3) and stays resident once touched, and contrast
# criteria read a row at nearly every token of a response: the cap is what 1/OUTPUT_SHARE of the
# memory available when the context is created holds, between MIN_OUTPUTS and n_batch (fewer rows per
# decode mean more, smaller decodes: 64 rows cost 9-16% of judge time against 512). MAX_OUTPUTS, when
# set, replaces the rule (tests, bench/step_memory.py).
MIN_OUTPUTS = 64
OUTPUT_SHARE = 32
MAX_OUTPUTS: int | None = None


def output_rows(n_vocab: int, n_batch: int) -> int:
    """Logits rows per decode: :data:`MAX_OUTPUTS` when set, else what 1/:data:`OUTPUT_SHARE` of the
    available memory holds, within [MIN_OUTPUTS, n_batch]."""
    if MAX_OUTPUTS is not None:
        return MAX_OUTPUTS
    rows = _available_bytes() // OUTPUT_SHARE // (4 * n_vocab)
    return int(max(MIN_OUTPUTS, min(n_batch, rows)))


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where there is none: the floor then applies)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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
    header_tokens: int = 0  # tokens decoded for headers (0 while the cached one is reused)
    prompt_tokens: int = 0  # tokens decoded for the queries' other segments (a shared node once)
    rationale_tokens: int = 0  # tokens generated (rationales)
    chunks: int = 0  # scheduled chunks of queries
    generate_loops: int = 0  # greedy generation loops (one per call that generates, whatever the chunking)
    rationale_decodes: int = 0  # llama_decode calls of those loops (one per generated position, all sequences)
    score_s: float = 0.0  # wall seconds decoding headers and queries
    rationale_s: float = 0.0  # wall seconds of the generation loops
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
        self._api = llamacpp.load_api("the llama_cpp judge backend")
        self._l = self._api[0]
        try:
            self.model = llamacpp.load_model(self._api, model_path, n_gpu_layers)
        except (ValueError, RuntimeError) as exc:
            raise MinirftError(f"judge model {model_path}: llama.cpp could not load it ({exc})") from None
        self.max_seqs = max_seqs
        self.n_seq = 2 if deterministic else max_seqs + 2  # 0: the header; 1: a held prefix / the query
        self.n_batch = n_batch
        self.deterministic = deterministic
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self.context = None
        self.ctx = None
        self.n_ctx_cap = n_ctx  # judge.n_ctx: the most tokens one query may have
        self.n_ctx_seq = 0  # context per sequence (each has its own KV stream), sized by _ensure_context
        self.n_vocab = self.model.n_vocab()
        self._batch = llamacpp.Batch(self._l, n_batch, 1 if deterministic else MAX_SEQ)
        self.n_cells = self.n_seq_ctx = 0  # the unified cache's size (default mode), set by _ensure_context
        self.max_outputs = MIN_OUTPUTS  # logits rows per decode, set with the context (output_rows)
        self._gen_decoded = 0  # tokens decoded by generation loops (fed-back generated tokens)
        self._header: tuple[int, ...] | None = None
        self.tokenize = TokenCache(lambda text, bos: self.model.tokenize(text.encode("utf-8"), bos, True))
        self.stats = EngineStats()
        self.add_bos = bool(self.model.add_bos_token())

    def _ensure_context(self, need: int, cells: int = 0, n_seq: int = 0) -> None:
        """(Re)create the context when the current one is too small.

        ``need``: the longest query (with its generated tokens), checked against judge.n_ctx.
        Default mode: one unified KV cache of at least ``cells`` cells for at least ``n_seq``
        sequences; it only grows (with room to spare), so it is not rebuilt call after call.
        Deterministic mode: one KV stream per sequence, each judge.n_ctx long (a fixed shape).
        """
        if need > self.n_ctx_cap:
            raise RuntimeError(f"judge query is {need} tokens; judge.n_ctx is {self.n_ctx_cap}")
        if self.deterministic:
            if self.context is not None:
                return
            size, n_seq, total = self.n_ctx_cap, self.n_seq, self.n_ctx_cap * self.n_seq
        else:
            if self.context is not None and cells <= self.n_cells and n_seq <= self.n_seq_ctx:
                return
            total = max(self.n_cells, -(-int(max(cells, 2 * self.n_batch) * 1.5) // 256) * 256)
            n_seq = max(self.n_seq_ctx, min(MAX_SEQ, n_seq + 16))
            size = total
        if self.context is not None:
            self.context.close()
            self.context = None
        try:
            # Default: one cache whose cells carry the ids of every sequence that shares them (a shared
            # prefix is stored once, no copies); masked attention keeps each query to its own cells.
            # Deterministic: one stream per sequence, so a query's numbers never depend on its neighbours.
            # n_outputs_max: llama.cpp reserves n_seq_max rows when it creates the context and asserts
            # that many fit. swa_full off: sliding-window layers keep only their window (much less memory).
            self.max_outputs = output_rows(self.n_vocab, self.n_batch)
            self.context = llamacpp.new_context(self._api, self.model, n_ctx=total, n_batch=self.n_batch,
                                                n_seq_max=n_seq, n_threads=self.n_threads,
                                                kv_unified=not self.deterministic,
                                                n_outputs_max=max(self.max_outputs, n_seq), flash_attn=False,
                                                swa_full=False)
        except ValueError as exc:
            raise MinirftError(f"judge model {self.model.path_model}: could not create a context ({exc}); "
                               "lower judge.n_ctx or judge.max_seqs") from None
        self.ctx = self.context.ctx
        self.mem = llamacpp.Memory(self._l, self.ctx)
        self.n_ctx_seq = size
        self.n_cells, self.n_seq_ctx = total, n_seq
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
    def _decode(self, items: list[tuple[int, int, Any, Any]]) -> None:
        """Decode (token, pos, seq, take) items in n_batch pieces. ``seq`` is a sequence id or a tuple
        of them (a token shared by several sequences of the unified cache: decoded once, stored once).
        ``take`` is None (no logits) or a callable given that position's logits row, at once: llama.cpp
        keeps logits only until the next decode, and the callable reads what it needs from the row in
        place (a 262k-entry row is never copied per position)."""
        for piece in _pieces(items, self.n_batch, self.max_outputs):
            self._batch.decode(self.ctx, [(tok, pos, seq, take is not None) for tok, pos, seq, take in piece],
                               " (context full? raise judge.n_ctx)")
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
        self.mem.rm(-1)  # every sequence
        self._header = None
        self._decode([(t, p, HEADER_SEQ, None) for p, t in enumerate(header)])
        self.stats.header_tokens += len(header)
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
        t0 = time.perf_counter()
        gen_before = self.stats.rationale_s
        header = self.tokenize(queries[0].segments[0], bos=self.add_bos)
        want_ids = np.asarray(want, dtype=np.int64)
        paths = [self._path(q) for q in queries]
        lengths = [len(header) + len(p.tokens) for p in paths]
        need = max(n + q.generate for n, q in zip(lengths, queries))
        results: list[Result] = [Result() for _ in queries]
        before, header_before, gen_decoded_before = self.stats.tokens_decoded, self.stats.header_tokens, self._gen_decoded
        if self.deterministic:
            self._ensure_context(need)
            self._set_header(header)
            for i, q in enumerate(queries):  # one query at a time, in a fixed layout
                self.mem.cp(HEADER_SEQ, HOLD_SEQ)
                try:
                    self._decode_trie([i], queries, paths, {i: HOLD_SEQ}, {i: 0}, len(header), want_ids, results)
                    self._generate([q], [results[i]], [HOLD_SEQ], [lengths[i]])
                finally:
                    self.mem.rm(HOLD_SEQ)
        else:
            plan = Plan(queries, paths, self.max_seqs, max(CHUNK_CELLS, (need - len(header)) * 5 // 4))
            self._ensure_context(need, len(header) + plan.cells, plan.n_seq)
            self._set_header(header)
            self._run_plan(plan, queries, paths, len(header), want_ids, results)
        self.stats.per_query_tokens += sum(lengths)
        self.stats.queries += len(queries)
        self.stats.prompt_tokens += (self.stats.tokens_decoded - before - (self.stats.header_tokens - header_before)
                                     - (self._gen_decoded - gen_decoded_before))
        self.stats.score_s += time.perf_counter() - t0 - (self.stats.rationale_s - gen_before)
        return results

    def _path(self, q: Query) -> "_Path":
        """A query's tokens after the header: its segments tokenized as one text, as a prompt is (so a
        shared text prefix is a shared token prefix, and no query has more tokens than its whole text);
        a score_last query's last segment on its own, so its scored tokens are exactly that segment's."""
        rest = q.segments[1:]
        if q.score_last:
            if len(rest) < 2 or not rest[-1] or not "".join(rest[:-1]):
                raise ValueError("a score_last query needs non-empty last and second-to-last segments")
            segments = (self.tokenize("".join(rest[:-1])), self.tokenize(rest[-1]))
            if not segments[0] or not segments[1]:
                raise ValueError("a score_last query needs non-empty last and second-to-last segments")
        else:
            segments = (self.tokenize("".join(rest)),)
            if not segments[0]:
                raise ValueError("a judge query needs text after the header")
        return _Path(segments, q.score_last)

    def _run_plan(self, plan: "Plan", queries, paths, n_header, want_ids, results) -> None:
        """Default mode: each chunk's token trie in one decode (pieces of n_batch tokens), every token
        tagged with the sequences of all queries that share it. The token prefix a chunk shares with
        the next (a row split over two chunks) stays in HOLD_SEQ; generating queries keep their sequence
        until one greedy loop generates for all of them at the end."""
        free = list(range(MAX_SEQ - 1, HOLD_SEQ, -1))
        keep: list[tuple[int, int, int]] = []  # (query, seq, pos) of generating queries
        held: tuple[int, ...] = ()
        try:
            for members, next_held, generate_after in plan.chunks:
                if len(free) < len(members):  # more generating queries than sequence ids: generate now
                    self._generate_kept(keep, queries, results, free)
                self.stats.chunks += 1
                seq_of, start = {}, {}
                for m in members:
                    s = free.pop()
                    seq_of[m] = s
                    # the part of the held prefix this query starts with; the positions whose logits
                    # it reads are decoded here
                    k = min(_lcp(held, paths[m].tokens), paths[m].read_from)
                    start[m] = k
                    if k:
                        self.mem.cp(HOLD_SEQ, s, n_header + k)
                    else:
                        self.mem.cp(HEADER_SEQ, s)
                self._decode_trie(members, queries, paths, seq_of, start, n_header, want_ids, results)
                if held != next_held:
                    self.mem.rm(HOLD_SEQ)
                    if next_held:
                        owner = next(m for m in reversed(members) if paths[m].tokens[:len(next_held)] == next_held)
                        self.mem.cp(seq_of[owner], HOLD_SEQ, n_header + len(next_held))
                    held = next_held
                for m in members:
                    if queries[m].generate:
                        keep.append((m, seq_of[m], n_header + len(paths[m].tokens)))
                    else:
                        self.mem.rm(seq_of[m])
                        free.append(seq_of[m])
                if generate_after:
                    self._generate_kept(keep, queries, results, free)
            self._generate_kept(keep, queries, results, free)
        finally:
            for m, s, _ in keep:
                self.mem.rm(s)
            self.mem.rm(HOLD_SEQ)

    def _generate_kept(self, keep, queries, results, free) -> None:
        if not keep:
            return
        idx = [m for m, _, _ in keep]
        sub = [queries[m] for m in idx]
        res = [results[m] for m in idx]
        self._generate(sub, res, [s for _, s, _ in keep], [p for _, _, p in keep])
        for _, s, _ in keep:
            self.mem.rm(s)
            free.append(s)
        keep.clear()

    def _decode_trie(self, members, queries, paths, seq_of, start, n_header, want_ids, results) -> None:
        """Decode the token trie of ``members`` in one decode: a token shared by several queries (same
        tokens before it, same starting cell) is decoded once, tagged with all their sequences.
        ``start[m]``: how many of m's tokens its sequence already holds. Every query ends with its
        whole path in its own sequence; the logits a query reads are read as their tokens decode."""
        nodes: dict[tuple, int] = {}
        items: list[list] = []  # [token, pos, seqs, reads]
        for m in members:
            path, parent = paths[m], ("start", start[m])
            for t in range(start[m], len(path.tokens)):
                key = (parent, path.tokens[t])
                idx = nodes.get(key)
                if idx is None:
                    idx = nodes[key] = len(items)
                    items.append([path.tokens[t], n_header + t, [], []])
                items[idx][2].append(seq_of[m])
                if path.reads_at(t):
                    items[idx][3].append(m)
                parent = idx
        scored = {m: np.zeros(len(paths[m].tokens) - paths[m].read_from - 1) for m in members if paths[m].score_last}
        self._decode([(tok, pos, seqs[0] if len(seqs) == 1 else tuple(seqs),
                       self._take(pos - n_header, reads, queries, paths, want_ids, results, scored) if reads else None)
                      for tok, pos, seqs, reads in items])
        for m, lps in scored.items():
            results[m].token_logprobs = lps

    @staticmethod
    def _take(t, readers, queries, paths, want_ids, results, scored):
        """What to read from the logits after token ``t`` of the queries ``readers`` (which share it):
        the verdict row of a query ending here, the log-probability of the next token for score_last ones."""
        verdict = [m for m in readers if not paths[m].score_last]

        def take(row: np.ndarray) -> None:
            if verdict:
                chosen = row[want_ids].astype(np.float64)
                first = int(np.argmax(row)) if any(queries[m].generate for m in verdict) else None
                for m in verdict:
                    results[m].logits = chosen
                    results[m].first = first  # the greedy first token: starts a generating query's text
            if len(verdict) < len(readers):
                # the scored tokens' logits first, then log-sum-exp in place: the row is llama.cpp's
                # output buffer, read by nobody after this position, so no copy of 262k floats is made
                picks = [(m, float(row[paths[m].tokens[t + 1]])) for m in readers if paths[m].score_last]
                top = row.max()
                np.subtract(row, top, out=row)
                np.exp(row, out=row)
                lse = float(top) + math.log(float(row.sum(dtype=np.float64)))  # float32 exp, float64 sum
                for m, z in picks:
                    scored[m][t - paths[m].read_from] = z - lse
        return take

    def _generate(self, queries, results, seqs, pos) -> None:
        """Greedy continuation of every generating query together: one decode per step with one token
        per active sequence (rationales). Stops at a stop string, end of generation or the token cap."""
        active = [i for i, q in enumerate(queries) if q.generate]
        if not active:
            return
        t0, dec0 = time.perf_counter(), self.stats.tokens_decoded
        self.stats.generate_loops += 1
        out: dict[int, list[int]] = {i: [] for i in active}
        nxt = {i: results[i].first for i in active}
        pos = list(pos)
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
            self.stats.rationale_decodes += 1
            for i in active:
                pos[i] += 1
        for i, toks in out.items():
            results[i].text = cut_at_stop(self.model.detokenize(toks).decode("utf-8", errors="replace"),
                                          queries[i].stop)
            self.stats.rationale_tokens += len(toks)
        self._gen_decoded += self.stats.tokens_decoded - dec0
        self.stats.rationale_s += time.perf_counter() - t0

    def close(self) -> None:
        self._batch.free()
        if self.context is not None:
            self.context.close()
            self.context = None
        self.model.close()


@dataclass(frozen=True)
class _Path:
    """A query's tokens after the header (its token segments joined) and the positions whose logits it reads:
    the last token (a verdict), or for ``score_last`` the token before its last segment up to the
    one before its end (the log-probability of each token of that segment)."""

    tokens: tuple[int, ...]
    read_from: int
    score_last: bool

    def __init__(self, segments: Sequence[tuple[int, ...]], score_last: bool) -> None:
        tokens = tuple(t for seg in segments for t in seg)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "score_last", score_last)
        object.__setattr__(self, "read_from", len(tokens) - len(segments[-1]) - 1 if score_last else len(tokens) - 1)

    def reads_at(self, t: int) -> bool:
        return self.read_from <= t < len(self.tokens) - (1 if self.score_last else 0)


class Plan:
    """How the default mode runs the queries of one call: their order and their chunks.

    Order: queries sorted by their tokens (a walk of the token trie), so queries that share a prefix are
    adjacent whatever order they came in (criterion-major callers cost what row-major ones do) and the
    same set of queries is laid out the same way in the cache (the same numbers, in any order); rows with
    generating queries last, since those keep their cells until the one generation loop at the end.
    Chunks: consecutive queries, at most ``max_q`` of them and ``budget`` KV cells of distinct trie nodes
    (every token attends over all cells in use, so a chunk stays near the size of its longest query
    rather than the whole call). The token prefix a chunk shares with the next one is held (HOLD_SEQ)
    instead of being decoded again. Generating queries keep their cells until one greedy loop generates
    for all of them, at the end of the call, or earlier once they hold ``KEEP_CELLS`` (long prompts:
    their cells would slow every later chunk).
    """

    def __init__(self, queries: Sequence[Query], paths: Sequence[_Path], max_q: int, budget: int) -> None:
        rows = [q.segments[1] if len(q.segments) > 1 else "" for q in queries]
        gen_rows = {r for r, q in zip(rows, queries) if q.generate}
        flat = [p.tokens for p in paths]
        self.order = sorted(range(len(queries)), key=lambda i: (rows[i] in gen_rows, flat[i]))
        self.chunks: list[tuple[list[int], tuple[int, ...], bool]] = []  # (queries, held for the next, generate after)
        keep_limit = max(budget, KEEP_CELLS)
        cur: list[int] = []
        cells = kept = peak = 0
        prev = None
        for i in self.order:
            shared = _lcp(flat[prev], flat[i]) if prev is not None else 0
            if cur and (len(cur) >= max_q or cells + len(flat[i]) - shared > budget):
                kept += self._kept_cells(cur, flat, queries)
                flush = kept >= keep_limit  # kept cells slow every later chunk: generate what is kept now
                self.chunks.append((cur, flat[i][:shared], flush))
                if flush:
                    kept = 0
                cur, cells = [], shared
            cur.append(i)
            cells += len(flat[i]) - shared
            peak = max(peak, kept + cells)
            prev = i
        if cur:
            self.chunks.append((cur, (), True))
        self.cells = peak + sum(q.generate for q in queries)
        self.n_seq = min(MAX_SEQ, 2 + max_q + sum(1 for q in queries if q.generate))

    @staticmethod
    def _kept_cells(members, flat, queries) -> int:
        gen = [flat[m] for m in members if queries[m].generate]
        return sum(len(f) - (_lcp(gen[k - 1], f) if k else 0) for k, f in enumerate(gen))


def _pieces(items: list, n_batch: int, max_outputs: int):
    """``items`` in consecutive pieces of at most ``n_batch`` tokens and ``max_outputs`` logits rows."""
    piece: list = []
    outputs = 0
    for item in items:
        wants = item[3] is not None
        if len(piece) == n_batch or (wants and outputs == max_outputs):
            yield piece
            piece, outputs = [], 0
        piece.append(item)
        outputs += wants
    if piece:
        yield piece


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the token prefix two paths share."""
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


class LlamaEvaluator(EvaluatorBase):
    """Label probabilities and token log-probabilities from :class:`Engine` logits. The model loads
    on first use (or :meth:`load`), once."""

    def __init__(self, model_path: str, *, n_ctx: int, n_batch: int, n_threads: int | None,
                 n_gpu_layers: int, max_seqs: int, deterministic: bool) -> None:
        self.model_path = model_path
        self._kw = dict(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                        max_seqs=max_seqs, deterministic=deterministic)
        self._engine: Engine | None = None
        self._ids: dict[tuple, list[list[int]]] = {}
        self._taken: dict[str, float] = {}  # the engine's counters at the last take_metrics

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.model_path, **self._kw)
        return self._engine

    def load(self) -> None:
        self.engine  # noqa: B018 - loads the model

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

    def take_metrics(self) -> dict[str, float]:
        """The engine's work since the last call (the trainer logs it per step): seconds scoring and
        generating rationales, and the tokens decoded for each (headers, query prompts, rationales)."""
        if self._engine is None:
            return {}
        st = self._engine.stats
        now = {"judge/score_s": st.score_s, "judge/rationale_s": st.rationale_s,
               "judge/header_tokens": st.header_tokens, "judge/prompt_tokens": st.prompt_tokens,
               "judge/rationale_tokens": st.rationale_tokens, "judge/queries": st.queries}
        last, self._taken = self._taken, now
        return {k: v - last.get(k, 0) for k, v in now.items()}

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Per ``score_last`` query: log P of each token of its last segment, and the tokens' text."""
        eng = self.engine
        out = []
        for q, res in zip(queries, eng.run(queries, [])):
            ids = eng.tokenize(q.segments[-1])
            pieces = tuple(eng.model.detokenize([t]).decode("utf-8", errors="replace") for t in ids)
            out.append(TokenScores(res.token_logprobs, pieces))
        return out
