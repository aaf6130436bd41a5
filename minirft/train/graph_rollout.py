"""Rollouts sampled by the policy itself with a static KV cache, each decode step replayed as one CUDA
graph (``generation.engine: torch_graph``): the fast generator on a GPU.

Hugging Face ``generate`` launches every kernel of every layer from Python, token after token: for a
decode step of 32 sequences that is a few milliseconds of GPU work behind tens of milliseconds of
launches (an 8B nf4 QLoRA policy on an H200 sampled ~300 tokens/s, ``bench/gpu_check.py``). Here:

1. the P·G prompts are left-padded to a width rounded up to ``PROMPT_BUCKET`` tokens and prefilled once
   into a ``transformers.StaticCache`` of that width + ``max_new_tokens`` (the only variable-shape
   forward of the step, run as it is);
2. one decode step — the model's own forward on one token per sequence, reading and writing the
   static cache at a slot given by a tensor — is captured once as a CUDA graph and replayed for every
   token; position ids, the slot and the attention mask live in fixed buffers updated in place. A
   new graph is captured only when the batch or the bucketed width changes;
3. sampling (temperature, then top-k, then top-p, Hugging Face's order) runs in torch on the GPU
   from the graph's logits, with torch's global RNG, so a seeded run is reproducible and a resumed run
   (torch's CUDA RNG is checkpointed) samples what the uninterrupted one would have.

The weights are the trainer's own (the LoRA as it is now: folded into a bf16 base, or live over a
4-bit one), so the samples come from exactly the policy being trained — no importance correction is
needed, unlike ``llama_cpp``. On the CPU the same loop runs without graph capture (tests check it
against ``generate``); it is chosen by ``auto`` only on CUDA.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch
from transformers import AttentionInterface

from minirft.cuda_memory import kv_cache_bytes
from minirft.errors import MinirftError
from minirft.recipe import GenerationConfig, Recipe
from minirft.train.policy import Generated, Policy, _left_pad

PROMPT_BUCKET = 64  # prompt widths rounded up to this: a new graph only when a step's longest prompt crosses it
EOS_CHECK_EVERY = 16  # decode steps between checks that every sequence has ended (each check syncs the GPU)
# A static cache larger than this is freed after each step's sampling and the graph captured again next
# step: the update needs the memory more than the next step needs the capture's fraction of a second
# (an 8B Llama-3 shape, 32 sequences x 640 slots: 2.7 GB).
KEEP_CACHE_BYTES = 1 << 30


class GraphGenerator:
    """The torch_graph rollout engine (``minirft.train.engines.RolloutEngine``)."""

    name = "torch_graph"

    def __init__(self, recipe: Recipe, policy: Policy, *, use_graph: bool | None = None) -> None:
        if policy.backend != "hf":
            raise MinirftError("generation.engine: torch_graph needs policy.backend: hf (transformers + peft); "
                               "use generation.engine: torch with unsloth (its own fast generation)")
        self.gen_cfg: GenerationConfig = recipe.generation
        self.use_graph = policy.device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and policy.device.type != "cuda":
            raise MinirftError("generation.engine: torch_graph: CUDA graphs need a CUDA device")
        if not supports(policy.model.config):
            raise MinirftError("generation.engine: torch_graph takes models whose every layer attends to the "
                               "whole context; this policy has sliding-window layers: use generation.engine: torch")
        self._key: tuple[int, int] | None = None  # (sequences, cache width) the buffers were made for
        self._graph: Any = None
        self.step_timings: dict[str, float] = {}  # extra step metrics of the last call
        self.graph_captures = 0
        self.graph_error: str | None = None  # why capture failed (then the same loop runs without a graph)
        self._notes: list[str] = []

    # ---------------------------------------------------------------------------- buffers
    def _prepare(self, policy: Policy, n: int, width: int) -> None:
        """Static cache and step buffers for ``n`` sequences of ``width`` cache slots (kept while the
        shape stays the same: the graph reads their addresses)."""
        from transformers import StaticCache

        if self._key == (n, width):
            return
        self._graph = None
        self._key = None
        dev = policy.device
        config = policy.model.config
        self.cache = StaticCache(config=config, max_cache_len=width)
        self.tok = torch.zeros((n, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((n, 1), dtype=torch.long, device=dev)
        self.slot = torch.zeros((1,), dtype=torch.long, device=dev)
        self.mask = torch.zeros((n, 1, 1, width), dtype=torch.bool, device=dev)  # True: attend
        self.logits: torch.Tensor | None = None
        self._key = (n, width)
        self._cache_arg = _cache_keyword(policy.model)

    def _step(self, policy: Policy) -> torch.Tensor:
        """One decode step from the buffers: the token at ``tok`` (position ``pos``) attends to the
        slots ``mask`` allows and writes its keys/values at ``slot``; the next-token logits [N, V].
        Attention is :func:`decode_attention` (the model's own implementation again afterwards)."""
        self.mask.index_fill_(3, self.slot, True)
        base = policy.model.get_base_model()
        own = base.config._attn_implementation
        base.set_attn_implementation(DECODE_ATTENTION)
        try:
            out = policy.model(input_ids=self.tok, position_ids=self.pos, cache_position=self.slot,
                               attention_mask=self.mask, use_cache=True, **{self._cache_arg: self.cache})
        finally:
            base.set_attn_implementation(own)
        return out.logits[:, -1, :]

    def _capture(self, policy: Policy) -> None:
        """Capture ``_step`` as a CUDA graph (after two warm-up steps on a side stream, as torch asks).
        The warm-up writes land in the slot the first real step overwrites; the mask is reset after."""
        torch.cuda.synchronize(policy.device)
        side = torch.cuda.Stream(device=policy.device)
        side.wait_stream(torch.cuda.current_stream(policy.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(policy)
        torch.cuda.current_stream(policy.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step(policy)
        self._graph = graph
        self.graph_captures += 1

    def _prefill(self, policy: Policy, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The prompts' keys/values into slots [0, width); the logits of each prompt's last position."""
        slots = torch.arange(ids.shape[1], device=ids.device)
        out = policy.model(input_ids=ids, attention_mask=mask, position_ids=position, cache_position=slots,
                           use_cache=True, logits_to_keep=1, **{self._cache_arg: self.cache})
        return out.logits[:, -1, :]

    def _decode(self, policy: Policy) -> torch.Tensor:
        if self._graph is not None:
            self._graph.replay()
            return self.logits
        return self._step(policy)

    # ------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, policy: Policy, prompt_ids: list[list[int]], group_size: int) -> Generated:
        """G completions per prompt (group-major), sampled with ``generation``'s settings."""
        cfg = self.gen_cfg
        repeated = [ids for ids in prompt_ids for _ in range(group_size)]
        captures, t0 = self.graph_captures, time.perf_counter()
        out = self.sample(policy, repeated, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                          top_p=cfg.top_p, top_k=cfg.top_k)
        # a step that captured a new graph says so (its generation_s includes the capture)
        self.step_timings = {"generation/graph_captures": float(self.graph_captures - captures)}
        return out

    def take_notes(self) -> list[str]:
        """Warnings since the last call (a decode step that could not be captured as a CUDA graph)."""
        notes, self._notes = self._notes, []
        return notes

    @torch.no_grad()
    def sample(self, policy: Policy, prompt_ids: list[list[int]], *, max_new_tokens: int,
               temperature: float | None, top_p: float = 1.0, top_k: int = 0) -> Generated:
        """One completion per prompt, as :func:`minirft.train.policy.generate` returns it (greedy when
        ``temperature`` is None)."""
        model = policy.model
        longest = max(len(p) for p in prompt_ids)
        width_p = -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET
        n = len(prompt_ids)
        ids, att = _left_pad(prompt_ids, policy.pad_id, policy.device)
        ids = torch.nn.functional.pad(ids, (width_p - longest, 0), value=policy.pad_id)
        att = torch.nn.functional.pad(att, (width_p - longest, 0), value=0)
        eos = torch.tensor(policy.eos_ids, device=policy.device)
        was_training = model.training
        model.eval()
        try:
            with policy.folded():
                self._prepare(policy, n, width_p + max_new_tokens)
                self.cache.reset()
                # 1. prefill: the prompts' keys/values into slots [0, width_p); logits of the last position
                position = (att.cumsum(dim=1) - 1).clamp(min=0)
                full_mask = torch.nn.functional.pad(att, (0, max_new_tokens), value=0)
                logits = self._prefill(policy, ids, full_mask, position)
                if self.use_graph and self._graph is None and self.graph_error is None:
                    self.mask.zero_()
                    self.slot.fill_(width_p)
                    self.pos.copy_(position[:, -1:] + 1)
                    try:
                        self._capture(policy)
                    except RuntimeError as exc:  # an op that cannot be captured: the same loop, eagerly
                        self.graph_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        self._graph = None
                        torch.cuda.synchronize(policy.device)
                        self._notes.append(f"generation.engine: torch_graph: the decode step could not be "
                                           f"captured as a CUDA graph ({self.graph_error}); sampling "
                                           "without graphs (slower)")
                    self.cache.reset()  # the warm-up wrote into the cache: prefill again
                    logits = self._prefill(policy, ids, full_mask, position)
                self.mask.zero_()
                self.mask[:, 0, 0, :width_p] = att.bool()
                self.pos.copy_(position[:, -1:])
                tokens = torch.full((n, max_new_tokens), policy.pad_id, dtype=torch.long, device=policy.device)
                done = torch.zeros(n, dtype=torch.bool, device=policy.device)
                steps = 0
                for t in range(max_new_tokens):
                    nxt = sample_next(logits.float(), temperature, top_p, top_k)
                    nxt = torch.where(done, torch.full_like(nxt, policy.pad_id), nxt)
                    tokens[:, t] = nxt
                    done |= torch.isin(nxt, eos)
                    steps = t + 1
                    if t + 1 == max_new_tokens or ((t + 1) % EOS_CHECK_EVERY == 0 and bool(done.all())):
                        break
                    self.tok.copy_(nxt.unsqueeze(1))
                    self.pos.add_(1)
                    self.slot.fill_(width_p + t)
                    logits = self._decode(policy)
        finally:
            model.train(was_training)
        completion = tokens[:, :steps]
        is_eos = torch.isin(completion, eos)
        after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
        completion_mask = (~after_eos).long()
        completion = torch.where(after_eos, torch.full_like(completion, policy.pad_id), completion)
        ids, att = ids[:, width_p - longest:], att[:, width_p - longest:]
        if kv_cache_bytes(model.config, n, width_p + max_new_tokens) > KEEP_CACHE_BYTES:
            self.close()
        return Generated(torch.cat([ids, completion], dim=1), torch.cat([att, completion_mask], dim=1),
                         completion_mask, longest)

    def close(self) -> None:
        self._graph = None
        self._key = None
        self.cache = None


def supports(config: Any) -> bool:
    """Whether the engine can sample this model: no sliding-window layer in its static cache (such a
    layer's cache holds the window, not the context that :func:`decode_attention`'s mask lays out)."""
    from transformers import StaticCache

    return not any(layer.is_sliding for layer in StaticCache(config=config, max_cache_len=1).layers)


def decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of one new token per sequence over the whole static cache, for the decode step.

    ``query`` [N, H, 1, D]; ``key``/``value`` [N, KV, W, D] (grouped-query: H = KV × g); the boolean
    ``attention_mask`` [N, 1, 1, W] marks the slots each sequence may read. The g query heads of a
    key/value head are one matrix against its keys, so the cache is read once per step and never
    repeated g times — torch's SDPA with a mask repeats it (``repeat_kv``) and falls back to its math
    kernel, which made attention over 576 slots cost more than the 8B model's matmuls (H200,
    bench/results/gpu_check_h200.json). Scores and softmax in fp32."""
    n, heads, q_len, dim = query.shape
    kv = key.shape[1]
    q = query.reshape(n, kv, (heads // kv) * q_len, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else dim ** -0.5)
    scores = scores.masked_fill(~attention_mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(n, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


DECODE_ATTENTION = "minirft_decode"
AttentionInterface.register(DECODE_ATTENTION, decode_attention)


def _cache_keyword(model: Any) -> str:
    """The name the model's forward takes its KV cache by: ``cache`` (transformers ≥ 5.25) or
    ``past_key_values`` (earlier; later a deprecated alias)."""
    forward = model.get_base_model().forward  # the peft model's forward takes **kwargs
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def sample_next(logits: torch.Tensor, temperature: float | None, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row of ``logits`` [N, V]: greedy when ``temperature`` is None, else temperature,
    top-k, top-p (the smallest set of tokens whose probability reaches ``top_p``, at least one), then a
    draw from torch's global RNG."""
    if temperature is None:
        return logits.argmax(dim=-1)
    z = logits / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        p = torch.softmax(sorted_z, dim=-1)
        drop_sorted = (p.cumsum(dim=-1) - p) >= top_p  # tokens after the prefix that reached top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return torch.multinomial(torch.softmax(z, dim=-1), 1).squeeze(-1)
