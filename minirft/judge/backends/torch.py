"""The ``torch`` judge backend: a Hugging Face causal LM as judge, scored through the label-head kernel.

The same :class:`minirft.judge.base.Evaluator` as the llama_cpp backend (label probabilities, token
log-probabilities for contrast criteria, rationales),
same shared-prefix idea, on transformers' KV cache:

* the header (system + rubric + few-shot) is run once and its KV cache kept across calls (the
  trainer scores every step with the same rubric, so after the first step it costs nothing);
* the remaining segments of the queries of one chunk (``max_batch`` queries) form a trie, and the
  nodes of one trie level run in one right-padded batch on top of their parents' caches (a
  parent's cache rows are gathered for its children; padding in the middle of a row is masked
  out by the attention mask and skipped by explicit position ids). A row prompt shared by G
  candidates, or a candidate shared by several criteria, is therefore computed once per chunk;
* only the verdict position's final-norm hidden state is read, and
  :func:`minirft_kernels.label_head_probs` turns it into class probabilities from the K lm_head
  rows of the label tokens (Triton on CUDA, the torch reference on CPU): the [N, vocab] logits
  are never formed. Rationales (greedy generation) do need full logits, one token at a time.

Self-judging: pass an already-loaded model and tokenizer and a ``context`` to enter around every
forward — ``model.disable_adapter`` for a PEFT policy, so the judge is the frozen base (see the
``torch`` entry of :data:`minirft.judge.backends.BACKENDS`). The header cache stays valid because LoRA training never
touches the base weights; call :meth:`TorchEvaluator.reset` if the judge's own weights change.

Numerics: batching changes matmul shapes, so batched and one-at-a-time scores differ by float
rounding only (fp32 on CPU: :data:`BATCH_TOLERANCE`). Sliding-window models (Gemma 3) are run
with full-attention caches: exact while a query is shorter than the window (512 tokens for Gemma 3).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

from minirft.errors import MinirftError
from minirft.judge.backends.tokens import TokenCache, cut_at_stop, reached_stop
from minirft.judge.base import Evaluation, EvaluatorBase, Query, TokenScores

BATCH_TOLERANCE = 1e-4  # max |ΔP| between batched and one-at-a-time scores in fp32 (float rounding only)


@dataclass
class TorchStats:
    """Counters tests and benchmarks read: prefix sharing shows up as fewer forwarded tokens."""

    tokens_forwarded: int = 0  # real tokens run through the decoder (header included when computed)
    padded_tokens: int = 0  # padding slots run alongside them in batched levels
    forward_calls: int = 0
    header_runs: int = 0
    header_reuses: int = 0
    queries: int = 0
    per_query_tokens: int = 0  # what one-prompt-per-query evaluation would have forwarded
    generated_tokens: int = 0
    extra: dict = field(default_factory=dict)


def load_hf_judge(path: str, *, gguf_file: str | None = None, device: str = "auto", dtype: str = "auto",
                  load_in_4bit: bool = False):
    """(model, tokenizer) from a local HF folder, or a GGUF (dequantised by transformers). Offline only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = _device(device)
    if load_in_4bit and dev.type != "cuda":
        raise MinirftError("judge.load_in_4bit: 4-bit (bitsandbytes nf4) needs a CUDA device; "
                           "set judge.load_in_4bit: false to run the judge in fp32 on CPU")
    kw: dict = {"local_files_only": True}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    mkw = dict(kw, dtype=_dtype(dtype, dev))
    if load_in_4bit:
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MinirftError("judge.load_in_4bit needs bitsandbytes: pip install 'minirft[gpu]'") from None
        mkw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                        bnb_4bit_compute_dtype=torch.bfloat16)
        mkw["device_map"] = {"": dev.index or 0}
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModelForCausalLM.from_pretrained(path, **mkw)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        what = f"{path}/{gguf_file}" if gguf_file else path
        raise MinirftError(f"judge.model {what}: transformers could not load it "
                           f"({str(exc).splitlines()[0][:200]})") from None
    if not load_in_4bit:
        model.to(dev)
    model.eval()
    return model, tok


@contextlib.contextmanager
def _eval_mode(model):
    """eval() while judging: a lent policy may be in train mode (dropout; gradient checkpointing,
    which would also turn the KV cache off). Its mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MinirftError(f"judge.device: {name} but no CUDA device is available")
    return torch.device(name)


def _dtype(name: str, dev):
    import torch

    if name == "auto":
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class TorchEvaluator(EvaluatorBase):
    """Label probabilities from an HF causal LM's verdict hidden states.

    Either give ``model`` and ``tokenizer`` (already loaded: self-judging, tests) or ``loader``, a
    zero-argument callable returning them (called once, on first use; ``build_judge`` with
    ``prompt_format: auto`` uses it at once, to read the chat template).
    ``context`` is entered around every forward (e.g. ``policy.disable_adapter``).
    """

    def __init__(self, model=None, tokenizer=None, *, loader: Callable[[], tuple] | None = None,
                 context: Callable[[], contextlib.AbstractContextManager] | None = None,
                 max_batch: int = 16, kernel_backend: str | None = None, name: str = "torch judge") -> None:
        if model is None and loader is None:
            raise ValueError("TorchEvaluator needs model + tokenizer or a loader")
        self._model, self._tok, self._loader = model, tokenizer, loader
        self._context = context or contextlib.nullcontext
        self.max_batch = max(1, int(max_batch))
        self.kernel_backend = kernel_backend
        self.name = name
        self.stats = TorchStats()
        self._heads: dict[tuple, tuple] = {}
        self.tokenize = TokenCache(lambda text, bos: self.tokenizer(text, add_special_tokens=bos)["input_ids"])
        self._header: tuple | None = None  # (tokens, [(k, v) per layer])

    # ---------------------------------------------------------------------------- model
    @property
    def model(self):
        if self._model is None:
            self._model, self._tok = self._loader()
        return self._model

    def load(self) -> None:
        self.model  # noqa: B018 - loads the model (and the tokenizer)

    @property
    def tokenizer(self):
        self.model  # noqa: B018 - loads both
        return self._tok

    @property
    def device(self):
        return self.head_weight().device

    def head_weight(self):
        """The judge's [V, H] lm_head weight (a model the kernels cannot score is a configuration error)."""
        from minirft_kernels import KernelError
        from minirft_kernels.hf import lm_head_weight

        try:
            return lm_head_weight(self.model)
        except KernelError as exc:
            raise MinirftError(f"judge model {self.name}: {exc}") from None

    def reset(self) -> None:
        """Forget the cached header KV (needed only if the judge's weights changed)."""
        self._header = None

    def single_token(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    def chat_template(self) -> str:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def label_head(self, classes: Sequence[tuple[str, ...]]):
        """(label_weight [K, H], label_class [K]) for ``classes``: built once per label set."""
        import torch

        key = tuple(classes)
        if key not in self._heads:
            ids, cls = [], []
            for c, forms in enumerate(classes):
                found = sorted({t for t in (self.single_token(f) for f in forms) if t is not None} - set(ids))
                if not found:
                    raise MinirftError(f"judge model {self.name}: none of {list(forms)} is a single token; "
                                       "this model cannot be used as a judge with these labels")
                ids += found
                cls += [c] * len(found)
            weight = self.head_weight()
            idx = torch.tensor(ids, device=weight.device)
            self._heads[key] = (weight[idx].detach().contiguous(), torch.tensor(cls, device=weight.device), ids)
        return self._heads[key]

    # ---------------------------------------------------------------------------- evaluate
    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        import torch
        from minirft_kernels import label_head_probs

        if not queries:
            return []
        label_weight, label_class, _ = self.label_head(classes)
        with torch.no_grad(), self._context(), _eval_mode(self.model):
            hidden, texts, _ = self._run(queries)
            h = torch.stack(hidden)
            probs = label_head_probs(h, label_weight.to(h.dtype), label_class, len(classes),
                                     backend=self.kernel_backend)
        probs = probs.double().cpu().numpy()
        return [Evaluation(p / p.sum(), t) for p, t in zip(probs, texts)]

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Per ``score_last`` query: log P of each token of its last segment (through the selective
        log-prob kernel, from hidden states: the [T, vocab] logits are never formed), and the tokens' text."""
        import torch

        if not queries:
            return []
        with torch.no_grad(), self._context(), _eval_mode(self.model):
            _, _, scored = self._run(queries)
        out = []
        for q, lps in zip(queries, scored):
            ids = self.tokenize(q.segments[-1])
            out.append(TokenScores(lps.double().cpu().numpy(), tuple(self.tokenizer.decode([t]) for t in ids)))
        return out

    def _run(self, queries: Sequence[Query]):
        """(verdict hidden states, generated texts, scored-segment log-probs) per query; call under no_grad."""
        headers = {q.segments[0] for q in queries}
        if len(headers) != 1:
            raise ValueError("all queries of one evaluate call must share the header segment")
        header = self.tokenize(queries[0].segments[0], bos=True)
        # Segments are tokenized separately: a shared segment then has the same tokens in every query.
        toks = [tuple(t for t in (self.tokenize(s) for s in q.segments[1:]) if t) for q in queries]
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        longest = len(header) + max(sum(map(len, t)) + q.generate for t, q in zip(toks, queries))
        if limit and longest > limit:  # a RuntimeError: GroupJudge turns it into error scores, not a crash
            raise RuntimeError(f"judge query is {longest} tokens; the judge model handles {limit}")
        self.stats.queries += len(queries)
        self.stats.per_query_tokens += sum(len(header) + sum(map(len, t)) for t in toks)
        for q, t in zip(queries, toks):
            if q.score_last and (len(t) < 2 or t[-1] != self.tokenize(q.segments[-1])):
                raise ValueError("a score_last query needs a non-empty last segment after a non-empty context")
        hidden: list = [None] * len(queries)
        texts = [""] * len(queries)
        scored: list = [None] * len(queries)
        head_kv = self._header_kv(header)
        for start in range(0, len(queries), self.max_batch):
            idx = list(range(start, min(start + self.max_batch, len(queries))))
            self._run_chunk(head_kv, len(header), [toks[i] for i in idx], [queries[i] for i in idx],
                            idx, hidden, texts, scored)
        return hidden, texts, scored

    def _decoder(self):
        return self.model.get_decoder()

    def _forward(self, ids, mask, pos, kv):
        """One decoder call on top of ``kv`` (a list of (k, v) per layer); returns (hidden, new kv)."""
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        out = self._decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                              use_cache=True)
        self.stats.forward_calls += 1
        return out.last_hidden_state, [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    def _header_kv(self, header: tuple[int, ...]):
        import torch

        if self._header is not None and self._header[0] == header:
            self.stats.header_reuses += 1
            return self._header[1]
        dev = self.device
        ids = torch.tensor([header], device=dev)
        _, kv = self._forward(ids, torch.ones_like(ids), torch.arange(len(header), device=dev)[None], None)
        self.stats.tokens_forwarded += len(header)
        self.stats.header_runs += 1
        self._header = (header, kv)
        return kv

    def _run_chunk(self, head_kv, n_header, toks, queries, where, hidden, texts, scored) -> None:
        """Run one chunk's trie level by level; fill ``hidden``/``texts``/``scored`` at the indices ``where``."""
        import torch
        from minirft_kernels import selective_logprobs

        dev = self.device
        pad = self._pad_id()
        kv = head_kv
        mask = torch.ones(1, n_header, dtype=torch.long, device=dev)
        lengths = torch.tensor([n_header], device=dev)  # real tokens so far, per node
        parents: dict[tuple, int] = {(): 0}
        prev_last = None  # the previous level's last hidden state per node (it predicts a child's first token)
        for d in range(max(len(t) for t in toks)):
            nodes: dict[tuple, int] = {}
            parent_of: list[int] = []
            ends: dict[int, list[int]] = {}
            for q, t in enumerate(toks):
                if d >= len(t):
                    continue
                key = t[: d + 1]
                if key not in nodes:
                    nodes[key] = len(nodes)
                    parent_of.append(parents[t[:d]])
                if d == len(t) - 1:
                    ends.setdefault(nodes[key], []).append(q)
            segs = [k[-1] for k in nodes]
            n, width = len(segs), max(map(len, segs))
            seg_len = torch.tensor([len(s) for s in segs], device=dev)
            ids = torch.full((n, width), pad, dtype=torch.long, device=dev)
            for i, s in enumerate(segs):
                ids[i, : len(s)] = torch.tensor(s, device=dev)
            par = torch.tensor(parent_of, device=dev)
            seg_mask = (torch.arange(width, device=dev)[None] < seg_len[:, None]).long()
            mask = torch.cat([mask[par], seg_mask], dim=1)
            pos = lengths[par][:, None] + torch.arange(width, device=dev)[None]
            if d == 0 and n > 1:
                kv = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv]
            elif not (d == 0 or torch.equal(par, torch.arange(n, device=dev))):
                kv = [(k[par], v[par]) for k, v in kv]
            out, kv = self._forward(ids, mask, pos, kv)
            lengths = lengths[par] + seg_len
            self.stats.tokens_forwarded += int(seg_len.sum())
            self.stats.padded_tokens += n * width - int(seg_len.sum())
            last = out[torch.arange(n, device=dev), seg_len - 1]
            gen_nodes = []
            for node, qs in ends.items():
                if any(queries[q].score_last for q in qs):
                    n_tok = len(segs[node])
                    h = torch.cat([prev_last[parent_of[node]][None], out[node, : n_tok - 1]])
                    target = torch.tensor(segs[node], device=dev)[None]
                    lps = selective_logprobs(h[None], self.head_weight(), target, backend=self.kernel_backend)[0]
                for q in qs:
                    if queries[q].score_last:
                        scored[where[q]] = lps
                        continue
                    hidden[where[q]] = last[node]
                if any(queries[q].generate for q in qs):
                    gen_nodes.append(node)
            if gen_nodes:
                self._generate(gen_nodes, ends, queries, where, texts, last, kv, mask, lengths)
            parents = nodes
            prev_last = last

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for v in (tok.pad_token_id, tok.eos_token_id, 0):
            if v is not None:
                return int(v)
        return 0

    def _generate(self, gen_nodes, ends, queries, where, texts, last, kv, mask, lengths) -> None:
        """Greedy continuation of the nodes in ``gen_nodes``, batched, one token per step (rationales)."""
        import torch

        dev = self.device
        weight = self.head_weight()
        rows = torch.tensor(gen_nodes, device=dev)
        kv = [(k[rows], v[rows]) for k, v in kv]
        mask, pos = mask[rows], lengths[rows].clone()
        budget = max(queries[q].generate for node in gen_nodes for q in ends[node])
        stops = {node: queries[ends[node][0]].stop for node in gen_nodes}
        eos = {t for t in (self.tokenizer.eos_token_id,) if t is not None}
        out: list[list[int]] = [[] for _ in gen_nodes]
        alive = [True] * len(gen_nodes)
        nxt = (last[rows].float() @ weight.float().t()).argmax(-1)  # full logits: needed to pick a token
        for _ in range(budget):
            for i, node in enumerate(gen_nodes):
                if not alive[i]:
                    continue
                t = int(nxt[i])
                limit = max(queries[q].generate for q in ends[node])
                if t in eos or len(out[i]) >= limit:
                    alive[i] = False
                    continue
                out[i].append(t)
                if reached_stop(self.tokenizer.decode(out[i], skip_special_tokens=True), stops[node]):
                    alive[i] = False
            if not any(alive):
                break
            mask = torch.cat([mask, torch.ones(len(gen_nodes), 1, dtype=mask.dtype, device=dev)], dim=1)
            h, kv = self._forward(nxt[:, None], mask, pos[:, None], kv)
            pos = pos + 1
            self.stats.generated_tokens += sum(alive)
            nxt = (h[:, -1].float() @ weight.float().t()).argmax(-1)
        for i, node in enumerate(gen_nodes):
            text = self.tokenizer.decode(out[i], skip_special_tokens=True)
            for q in ends[node]:
                texts[where[q]] = cut_at_stop(text, queries[q].stop)

    def close(self) -> None:
        self._header = None
        self._heads.clear()
        if self._loader is not None:  # a model we loaded ourselves; a lent one (self-judge) stays
            self._model = self._tok = None
