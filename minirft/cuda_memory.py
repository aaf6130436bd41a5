"""GPU memory: the allocator setting minirft makes, the per-process cap, the peaks it logs, and an
estimate of a recipe's footprint made before any model loads.

- **Allocator.** torch's default CUDA caching allocator keeps every block size it ever cut: on the
  first GPU run (8B nf4 QLoRA policy + 3B judge in one process, an H200) the process held 46.7 GB for
  15.4 GB allocated. With ``expandable_segments:True`` segments grow and shrink in place and the same
  run held 17.8 GB. :func:`configure_allocator` sets it (``PYTORCH_CUDA_ALLOC_CONF``) unless the user
  set ``PYTORCH_CUDA_ALLOC_CONF`` or ``PYTORCH_ALLOC_CONF`` themselves; the CLI calls it before torch is
  imported, so it holds from the first allocation.
- **Cap.** ``training.gpu_memory_gb`` → ``torch.cuda.set_per_process_memory_fraction``: allocations
  past it fail as out-of-memory, so a run on a large card proves it fits a smaller one.
- **Peaks.** Each step logs ``gpu_peak_gb`` (allocated) and ``gpu_reserved_peak_gb`` (held by the
  allocator, what ``nvidia-smi`` shows less the CUDA context).
- **Estimate.** :func:`estimate` adds up weights (nf4 ≈ 0.56 bytes per linear weight, the rest bf16),
  LoRA weights, gradients and optimizer state, the rollout KV cache and the judge, from the models'
  config.json (models built on the meta device: no weights read). ``minirft doctor RECIPE`` prints it;
  ``minirft train`` warns on CUDA when it exceeds the card's free memory or the cap.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

EXPANDABLE = "expandable_segments:True"
_ENV_NAMES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
_USER_SETTING = next((f"{k}={os.environ[k]}" for k in _ENV_NAMES if k in os.environ), None)


def configure_allocator() -> str:
    """Use expandable segments unless the user configured the allocator; says which setting holds.
    Effective when called before torch's first CUDA allocation (the CLI calls it first thing)."""
    if _USER_SETTING is not None:
        return f"the user's {_USER_SETTING}"
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", EXPANDABLE)
    return f"PYTORCH_CUDA_ALLOC_CONF={EXPANDABLE} (minirft's default)"


def apply_cap(gb: float, device: int = 0) -> str:
    """Cap this process's CUDA allocations at ``gb`` GB (CUDA only); a line that says so."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return f"GPU memory capped at {gb:g} GB ({fraction:.1%} of {total / 2**30:.0f} GiB; training.gpu_memory_gb)"


def peaks() -> dict[str, float]:
    """Allocated and reserved peaks since the process started, in GiB (empty without CUDA)."""
    if "torch" not in sys.modules:
        return {}
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu_peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "gpu_reserved_peak_gb": torch.cuda.max_memory_reserved() / 2**30}


def kv_cache_bytes(config: Any, n: int, width: int, dtype_bytes: int = 2) -> int:
    """Bytes of a static KV cache of ``n`` sequences × ``width`` slots for a model config (bf16: 2)."""
    text = config.get_text_config()
    kv = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return n * width * text.num_hidden_layers * 2 * kv * head_dim * dtype_bytes


# ------------------------------------------------------------------------------------ estimate
@dataclass
class Footprint:
    """An estimate in GiB, part by part (``parts``: name → GiB), with what each assumed."""

    parts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def lines(self) -> list[str]:
        out = [f"  {name:<52} {gb:7.2f} GB" for name, gb in self.parts.items()]
        out.append(f"  {'total (estimate)':<52} {self.total:7.2f} GB")
        return out + [f"  note: {n}" for n in self.notes]


@dataclass
class _Shape:
    linear: int  # parameters in nn.Linear layers other than the output head
    other: int  # embeddings, output head, norms
    lora: int  # LoRA parameters for the recipe's rank and targets
    layers: int
    hidden: int
    config: Any

    def weights_gb(self, four_bit: bool, width: int) -> float:
        """nf4 (double quant: ~0.56 bytes per linear weight, the rest bf16) or ``width`` bytes each."""
        if four_bit:
            return (self.linear * 0.5625 + self.other * 2) / 2**30
        return (self.linear + self.other) * width / 2**30


def _shape(path: str, lora_r: int, targets: Any) -> _Shape:
    """Parameter counts of a Hugging Face model folder, built on the meta device from its config."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linear = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            linear += module.weight.numel()
            short = name.rsplit(".", 1)[-1]
            if targets == "all-linear" or short in (targets or []):
                lora += lora_r * (module.in_features + module.out_features)
    total = sum(p.numel() for p in model.parameters())
    text = config.get_text_config()
    return _Shape(linear, total - linear, lora, text.num_hidden_layers, text.hidden_size, config)


def estimate(recipe: Any, *, cuda: bool = True) -> Footprint:
    """The GPU footprint of ``recipe`` (a :class:`minirft.recipe.Recipe`) on CUDA, before loading."""
    from minirft.models import resolve_model

    fp = Footprint()
    pol = recipe.policy
    resolved = resolve_model(recipe.model_name(pol.model))
    if resolved.is_gguf:
        fp.notes.append(f"{pol.model}: a GGUF policy is dequantised by transformers; counted as bf16")
        size = resolved.path.stat().st_size
        fp.parts["policy weights (bf16, from GGUF)"] = size * 4 / 2**30  # ~4.5 bits -> 16 bits per weight
        return fp
    shape = _shape(str(resolved.path), pol.lora.r, pol.lora.target_modules)
    four_bit = pol.load_in_4bit if pol.load_in_4bit != "auto" else cuda
    kind = "nf4" if four_bit else (pol.dtype if pol.dtype != "auto" else "bfloat16")
    fp.parts[f"policy weights ({kind})"] = shape.weights_gb(four_bit, 4 if pol.dtype == "float32" else 2)
    opt = recipe.training.optimizer
    eight_bit = opt == "adamw8bit" or (opt == "auto" and cuda)
    state = 2 if eight_bit else 8
    fp.parts[f"LoRA r={pol.lora.r}: weights, grads, {'8-bit' if eight_bit else 'fp32'} AdamW"] = \
        shape.lora * (4 + 4 + state) / 2**30
    gen = recipe.generation
    seqs = recipe.training.prompts_per_step * gen.group_size
    tokens = pol.max_prompt_tokens + gen.max_new_tokens
    fp.parts[f"rollout KV cache ({seqs} seqs x {tokens} tokens, bf16)"] = \
        kv_cache_bytes(shape.config, seqs, tokens) / 2**30
    micro = recipe.training.micro_batch_prompts * gen.group_size
    # bf16 hidden states kept for backward: one per layer with gradient checkpointing, ~12 without
    kept = shape.layers * (1 if pol.gradient_checkpointing else 12)
    fp.parts[f"update activations ({micro} seqs, rough)"] = micro * tokens * shape.hidden * 2 * kept / 2**30
    if recipe.judge is not None:
        _judge_part(recipe, fp, cuda)
    fp.parts["CUDA context"] = 0.5
    return fp


def _judge_part(recipe: Any, fp: Footprint, cuda: bool) -> None:
    from minirft.models import resolve_model

    judge = recipe.judge
    if judge.self_judge:
        return
    models = [m.model for m in judge.panel] if judge.panel else [judge.model]
    for name in models:
        resolved = resolve_model(recipe.model_name(name))
        if judge.backend == "torch" and not resolved.is_gguf:
            shape = _shape(str(resolved.path), 0, [])
            fp.parts[f"judge {name} (torch)"] = shape.weights_gb(judge.load_in_4bit, 4 if judge.dtype == "float32" else 2)
        elif judge.backend == "llama_cpp" and judge.n_gpu_layers != 0:
            fp.parts[f"judge {name} (llama.cpp, offloaded)"] = resolved.path.stat().st_size / 2**30
        elif judge.backend == "torch":
            fp.parts[f"judge {name} (torch, dequantised GGUF)"] = resolved.path.stat().st_size * 4 / 2**30
