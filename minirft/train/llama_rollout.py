"""Rollouts sampled by llama.cpp (``generation.engine: llama_cpp``): the CPU analogue of TRL's vLLM rollouts.

The policy's base GGUF is loaded once in llama.cpp (llama-cpp-python's low-level API, through
:mod:`minirft.llamacpp`, the layer the judge backend uses too). Every step:

1. the live LoRA weights are written as a llama.cpp LoRA GGUF (``gguf_export.write_lora_state``, the
   writer of ``minirft export lora-gguf``), loaded with ``llama_adapter_lora_init`` and applied with
   ``llama_set_adapters_lora`` (the previous adapter is freed);
2. each prompt is decoded once, into the first sequence of its group, and its KV cells are shared
   with the group's other G − 1 sequences (``llama_memory_seq_cp`` on a unified KV cache: the cells
   are tagged with the extra sequence ids, not copied);
3. all P·G sequences then decode together, one token each per ``llama_decode``, until each has
   sampled an end-of-sequence token or ``max_new_tokens``.

Sampling is done here, in numpy, from llama.cpp's logits: temperature, then top-k, then top-p (the
order of Hugging Face's warpers), with a ``numpy`` generator seeded from torch's global RNG (one draw
per step), so a seeded run is reproducible and a resumed run (torch's RNG state is checkpointed)
samples what the uninterrupted one would have. The log-probability of each sampled token under the
tempered, untruncated distribution is kept (``Generated.sampling_logp``): it is the same quantity as
the trainer's torch log-prob, so the two differ only by the engines' numerics (quantized matmuls,
an f16 KV cache), which the loss corrects with truncated importance sampling (``importance.py``).

Token ids pass as they are between torch and llama.cpp: a GGUF policy's Hugging Face tokenizer is
built from that GGUF, and a Hugging Face folder policy is written as an f32 GGUF of the very weights
torch holds (``base_gguf``), so the vocabularies are the same. End of sequence is the policy's
``eos_ids``, as with ``generate``.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from minirft import llamacpp
from minirft.errors import MinirftError
from minirft.models import resolve_model
from minirft.recipe import GenerationConfig, Recipe
from minirft.train.policy import Generated, Policy

MAX_SEQS = 64  # sequences per llama.cpp context (P·G of one chunk of prompts)


class _BaseView:
    """The base weights of a peft-wrapped model as ``write_model_gguf`` reads a plain model: ``config``
    and a ``state_dict()`` without LoRA tensors and with peft's ``base_layer`` step removed."""

    def __init__(self, peft_model: Any) -> None:
        self.config = peft_model.config
        self._model = peft_model.get_base_model()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in self._model.state_dict().items():
            if ".lora_" in key:
                continue
            out[key.replace(".base_layer.", ".")] = value
        return out


def base_gguf(recipe: Recipe, policy: Policy, workdir: Path) -> Path:
    """The GGUF file llama.cpp samples from (``generation.engine_weights``): the policy's own file, or a
    GGUF of the base weights torch holds (by default in torch's own dtype, bf16 or f16, written into
    ``workdir``)."""
    resolved = resolve_model(recipe.model_name(recipe.policy.model))
    weights = recipe.generation.engine_weights
    if weights == "policy_gguf":
        if not resolved.is_gguf:
            raise MinirftError(f"generation.engine_weights: policy_gguf needs a GGUF policy.model; "
                               f"{recipe.policy.model} is a Hugging Face folder (use f16, q8_0 or f32)")
        return resolved.path
    from minirft import gguf_export

    if weights == "auto":  # an exact copy of what torch holds: bf16 as bf16, anything else as f16
        quant = "bf16" if next(policy.model.parameters()).dtype == torch.bfloat16 else "f16"
    else:
        quant = weights
    out = workdir / f"policy-base.{quant}.gguf"
    source = resolved.path if resolved.is_gguf else None
    try:
        gguf_export.write_model_gguf(_BaseView(policy.model), policy.tokenizer, out, quant=quant,
                                     tokenizer_dir=resolved.path.parent if source else resolved.path,
                                     source_gguf=source)
    except MinirftError as exc:
        raise MinirftError(f"generation.engine: llama_cpp: {str(exc).removeprefix('export: ')}; "
                           "use generation.engine: torch") from None
    return out


class LlamaRollout:
    """A policy base in llama.cpp that samples groups of completions with the live LoRA applied."""

    def __init__(self, model_path: Path, config: Any, *, lora_alpha: float, n_threads: int | None = None,
                 workdir: Path | None = None, kv_f32: bool = False) -> None:
        self._api = llamacpp.load_api("generation.engine: llama_cpp")
        self._l = self._api[0]
        self.config = config
        self.kv_f32 = kv_f32  # an f32 KV cache (tests: llama.cpp equals torch); default f16, as llama.cpp's
        self.lora_alpha = float(lora_alpha)
        self.n_threads = n_threads or max(1, torch.get_num_threads())
        self._own_dir = tempfile.TemporaryDirectory(prefix="minirft-lora-") if workdir is None else None
        self.workdir = Path(workdir) if workdir is not None else Path(self._own_dir.name)
        try:
            self.model = llamacpp.load_model(self._api, model_path, 0)
        except (ValueError, RuntimeError) as exc:
            raise MinirftError(f"generation.engine: llama_cpp: llama.cpp could not load {model_path} ({exc}); "
                               "use generation.engine: torch") from None
        self.n_vocab = self.model.n_vocab()
        self.n_batch = 512
        self._batch = llamacpp.Batch(self._l, self.n_batch, 1)
        self.context = None
        self.ctx = None
        self.n_ctx = 0
        self._adapter = None
        self._adapters = None  # the ctypes array handed to llama_set_adapters_lora (kept alive)
        self._scales = (ctypes.c_float * 1)(1.0)
        self.timings: dict[str, float] = {}
        self.tokens_decoded = 0

    # ------------------------------------------------------------------------------- context
    def _ensure_context(self, cells: int, n_seqs: int) -> None:
        """A context whose unified KV cache has room for ``cells`` tokens of ``n_seqs`` sequences."""
        if self.context is not None and cells <= self.n_ctx and n_seqs <= self.n_seq:
            return
        if self.context is not None:
            self.context.close()
            self.context = None
        size = max(512, -(-int(cells * 1.25) // 256) * 256)
        n_seq = max(n_seqs, MAX_SEQS)
        try:
            # a unified KV cache: the prompt's cells are shared by the group's sequences, not copied;
            # kv_f32 (tests: llama.cpp equals torch) also turns off CPU flash attention (it rounds Q to f16)
            self.context = llamacpp.new_context(self._api, self.model, n_ctx=size, n_batch=self.n_batch,
                                                n_seq_max=n_seq, n_threads=self.n_threads, kv_unified=True,
                                                n_outputs_max=self.n_batch, flash_attn=not self.kv_f32,
                                                kv_f32=self.kv_f32)
        except ValueError as exc:
            raise MinirftError(f"generation.engine: llama_cpp: could not create a context of {size} tokens "
                               f"({exc})") from None
        self.ctx = self.context.ctx
        self.mem = llamacpp.Memory(self._l, self.ctx)
        self.n_ctx, self.n_seq = size, n_seq
        if self._adapters is not None:
            self._apply_adapter()

    # ---------------------------------------------------------------------------------- LoRA
    def set_lora(self, state: dict[str, torch.Tensor]) -> None:
        """Write ``state`` (peft's LoRA tensors) as a llama.cpp LoRA GGUF and apply it, replacing the
        previous adapter."""
        from minirft import gguf_export

        t0 = time.perf_counter()
        path = self.workdir / "policy-lora.gguf"
        gguf_export.write_lora_state(state, self.lora_alpha, self.config, path, quant="f32", name="minirft-rollout")
        adapter = self._l.llama_adapter_lora_init(self.model.model, str(path).encode("utf-8"))
        path.unlink()
        if not adapter:
            raise MinirftError("generation.engine: llama_cpp: llama.cpp rejected the LoRA adapter")
        old = self._adapter
        self._adapter = adapter
        self._adapters = (self._l.llama_adapter_lora_p_ctypes * 1)(adapter)
        if self.ctx is not None:
            self._apply_adapter()
        if old is not None:
            self._l.llama_adapter_lora_free(old)
        self.timings["lora_sync_s"] = time.perf_counter() - t0

    def _apply_adapter(self) -> None:
        rc = self._l.llama_set_adapters_lora(self.ctx, self._adapters, 1, self._scales)
        if rc != 0:
            raise MinirftError(f"generation.engine: llama_cpp: llama_set_adapters_lora returned {rc}")

    # -------------------------------------------------------------------------------- decode
    def _decode(self, items: Sequence[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Decode (token, pos, seq, wants_logits) items in n_batch pieces; the logits rows asked for,
        in order (copies: llama.cpp overwrites them on the next decode)."""
        rows: list[np.ndarray] = []
        for start in range(0, len(items), self.n_batch):
            piece = items[start:start + self.n_batch]
            self._batch.decode(self.ctx, piece)
            self.tokens_decoded += len(piece)
            n_out = sum(1 for it in piece if it[3])
            if n_out:
                ptr = self._l.llama_get_logits(self.ctx)
                rows.extend(np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).copy())
        return rows

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """[len(ids), V] logits at every position of one sequence (tests compare them with torch's)."""
        self._ensure_context(len(ids), 1)
        self.mem.clear()
        return np.stack(self._decode([(t, p, 0, True) for p, t in enumerate(ids)]))

    def sample(self, prompt_ids: Sequence[Sequence[int]], group_size: int, gen: GenerationConfig,
               eos_ids: Sequence[int], seed: int) -> tuple[list[list[int]], list[list[float]]]:
        """G completions per prompt (group-major) and the log-prob of each sampled token."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        per_chunk = max(1, MAX_SEQS // group_size)
        tokens: list[list[int]] = []
        logps: list[list[float]] = []
        for lo in range(0, len(prompt_ids), per_chunk):
            t, lp = self._sample_chunk(prompt_ids[lo:lo + per_chunk], group_size, gen, set(eos_ids), rng)
            tokens += t
            logps += lp
        self.timings["sample_s"] = time.perf_counter() - t0
        return tokens, logps

    def _sample_chunk(self, prompts, G, gen, eos, rng):
        n = len(prompts) * G
        self._ensure_context(sum(len(p) for p in prompts) + n * gen.max_new_tokens, n)
        self.mem.clear()
        # 1. each prompt once, into the first sequence of its group; logits at its last token only
        items = [(tok, pos, g * G, pos == len(p) - 1) for g, p in enumerate(prompts) for pos, tok in enumerate(p)]
        first = self._decode(items)
        for g in range(len(prompts)):
            for k in range(1, G):
                self.mem.cp(g * G, g * G + k)
        # 2. all sequences together, one token each per decode
        rows = np.stack([first[s // G] for s in range(n)])
        pos = [len(prompts[s // G]) for s in range(n)]
        out: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        active = list(range(n))
        for _ in range(gen.max_new_tokens):
            u = rng.random(n)  # one draw per sequence and position, whatever is still active
            toks, lp = sample_rows(rows, u[active], gen.temperature, gen.top_p, gen.top_k)
            still = []
            for s, tok, logp in zip(active, toks, lp):
                out[s].append(int(tok))
                lps[s].append(float(logp))
                if int(tok) not in eos and len(out[s]) < gen.max_new_tokens:
                    still.append(s)
            active = still
            if not active:
                break
            rows = np.stack(self._decode([(out[s][-1], pos[s] + len(out[s]) - 1, s, True) for s in active]))
        return out, lps

    def close(self) -> None:
        self._batch.free()
        if self.context is not None:
            self.context.close()
            self.context = None
        if self._adapter is not None:
            self._l.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self.model.close()
        if self._own_dir is not None:
            self._own_dir.cleanup()


def sample_rows(logits: np.ndarray, u: np.ndarray, temperature: float | None, top_p: float = 1.0,
                top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One token per row of ``logits`` [n, V] by inverse CDF with uniforms ``u`` [n], after
    temperature, top-k and top-p (greedy when ``temperature`` is None); and log p(token) under the
    tempered distribution *before* top-k/top-p, the quantity the trainer's torch log-prob measures.

    float32 arithmetic (the softmax denominator summed in float64): a 49k vocabulary × 16 rows per
    decoded token stays a few milliseconds."""
    z = logits.astype(np.float32, copy=True)
    if temperature is not None:
        z /= np.float32(temperature)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    lse = m[:, 0].astype(np.float64) + np.log(e.sum(axis=1, dtype=np.float64))
    rows = np.arange(z.shape[0])
    if temperature is None:
        toks = z.argmax(axis=1)
    else:
        p = e
        if top_k and top_k < z.shape[1]:
            kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
            p = np.where(z >= kth, p, 0.0).astype(np.float32)
        if top_p < 1.0:
            order = np.argsort(-p, axis=1, kind="stable")
            sorted_p = np.take_along_axis(p, order, axis=1)
            cum = np.cumsum(sorted_p, axis=1, dtype=np.float64)
            keep_sorted = (cum - sorted_p) < top_p * cum[:, -1:]  # the smallest prefix reaching top_p (≥ 1 token)
            keep = np.zeros_like(keep_sorted)
            np.put_along_axis(keep, order, keep_sorted, axis=1)
            p = np.where(keep, p, 0.0).astype(np.float32)
        toks = _inverse_cdf(p, u)
        toks = np.where(p[rows, toks] > 0, toks, p.argmax(axis=1))  # never a token of probability 0
    logp = z[rows, toks].astype(np.float64) - lse
    return toks, logp


def _inverse_cdf(p: np.ndarray, u: np.ndarray, block: int = 256) -> np.ndarray:
    """Per row, the first index whose cumulative weight exceeds ``u`` × the row's total: the cumulative
    sum is taken over blocks of ``block`` entries, then inside the one block that holds the draw (a
    full-vocabulary cumsum is the slowest step of sampling by far)."""
    n, v = p.shape
    if v % block:
        p = np.pad(p, ((0, 0), (0, block - v % block)))
    cb = np.cumsum(p.reshape(n, -1, block).sum(axis=2, dtype=np.float64), axis=1)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        target = u[i] * cb[i, -1]
        b = min(int(np.searchsorted(cb[i], target, side="right")), cb.shape[1] - 1)
        rest = target - (cb[i, b - 1] if b else 0.0)
        inner = np.cumsum(p[i, b * block:(b + 1) * block], dtype=np.float64)
        out[i] = b * block + min(int(np.searchsorted(inner, rest, side="right")), block - 1)
    return np.minimum(out, v - 1)


# ------------------------------------------------------------------------------ the rollout step
class LlamaGenerator:
    """The llama_cpp rollout engine (``minirft.train.engines.RolloutEngine``): ``generate(policy,
    prompt_ids, G)`` → Generated, ``step_timings`` (the LoRA sync of the last call), ``close()``."""

    name = "llama_cpp"

    def __init__(self, recipe: Recipe, policy: Policy) -> None:
        if policy.backend != "hf":
            raise MinirftError("generation.engine: llama_cpp needs policy.backend: hf (transformers + peft); "
                               "use generation.engine: torch")
        self.gen_cfg = recipe.generation
        self._dir = tempfile.TemporaryDirectory(prefix="minirft-rollout-")
        work = Path(self._dir.name)
        try:
            path = base_gguf(recipe, policy, work)
            self.engine = LlamaRollout(path, policy.model.config, lora_alpha=_lora_alpha(recipe),
                                       n_threads=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                                       workdir=work)
        except BaseException:
            self._dir.cleanup()
            raise
        self.model_path = path

    def generate(self, policy: Policy, prompt_ids: list[list[int]], group_size: int) -> Generated:
        t0 = time.perf_counter()
        self.engine.set_lora(policy.adapter_state())
        seed = int(torch.randint(0, 2**62, (1,)).item())  # from torch's global RNG: seeded and checkpointed
        cfg = self.gen_cfg
        tokens, logps = self.engine.sample(prompt_ids, group_size, cfg, policy.eos_ids, seed)
        gen = to_generated(prompt_ids, group_size, tokens, logps, policy)
        self.engine.timings["generate_s"] = time.perf_counter() - t0
        return gen

    @property
    def step_timings(self) -> dict[str, float]:
        return {"lora_sync_s": self.engine.timings["lora_sync_s"]}

    def take_notes(self) -> list[str]:
        return []

    def close(self) -> None:
        self.engine.close()
        self._dir.cleanup()


def _lora_alpha(recipe: Recipe) -> float:
    return float(recipe.policy.lora.alpha)


def to_generated(prompt_ids: list[list[int]], group_size: int, tokens: list[list[int]],
                 logps: list[list[float]], policy: Policy) -> Generated:
    """The layout ``generate`` returns (left-padded prompts, right-padded completions, masks), plus the
    engine's log-probs of the completion tokens (0 on padding)."""
    from minirft.train.policy import _left_pad

    repeated = [ids for ids in prompt_ids for _ in range(group_size)]
    ids, mask = _left_pad(repeated, policy.pad_id, policy.device)
    width = max(len(t) for t in tokens)
    comp = torch.full((len(tokens), width), policy.pad_id, dtype=torch.long)
    cmask = torch.zeros((len(tokens), width), dtype=torch.long)
    slogp = torch.zeros((len(tokens), width), dtype=torch.float32)
    for i, (t, lp) in enumerate(zip(tokens, logps)):
        comp[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        cmask[i, :len(t)] = 1
        slogp[i, :len(t)] = torch.tensor(lp, dtype=torch.float32)
    comp, cmask, slogp = comp.to(policy.device), cmask.to(policy.device), slogp.to(policy.device)
    return Generated(torch.cat([ids, comp], dim=1), torch.cat([mask, cmask], dim=1), cmask, ids.shape[1],
                     sampling_logp=slogp)
