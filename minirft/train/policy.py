"""The policy: a causal LM with a LoRA adapter, and the two things the trainer asks of it.

Backends (``policy.backend``):

- ``hf``: transformers + peft. On CUDA the base is loaded 4-bit (bitsandbytes nf4, double quant,
  bf16 compute) unless ``load_in_4bit: false``; on CPU it is bf16 where the CPU has native bf16, else
  fp32 (or the recipe's dtype). Generation runs with the adapter folded into the weights
  (:meth:`Policy.folded`). A GGUF
  file is loaded with ``gguf_file=`` and dequantised.
- ``unsloth``: ``FastLanguageModel`` (4-bit base, its LoRA and fast generation); CUDA only. It is
  imported lazily because ``import unsloth`` fails on a machine without a GPU.
- ``auto``: unsloth when CUDA is available and unsloth is installed, else hf.

The reference model of the KL term is the same base with the adapter disabled
(``with policy.reference():``) — no second copy of the weights in memory.

The per-token log-prob computation lives in ONE function, :func:`token_logprobs`, which runs the
fused selective log-prob kernel (``minirft_kernels``): no [B, T, V] logits are ever materialised.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from minirft.errors import MinirftError
from minirft_kernels import KernelError, selective_logprobs
from minirft_kernels.hf import decoder_hidden_states, lm_head_weight
from minirft.models import resolve_model
from minirft.recipe import PolicyConfig


@dataclass
class Policy:
    model: Any  # a peft model (LoRA adapter attached)
    tokenizer: Any
    backend: str  # "hf" | "unsloth"
    device: torch.device
    eos_ids: list[int]
    pad_id: int

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The base model: the LoRA adapter switched off for the duration."""
        with self.model.disable_adapter():
            yield

    @contextlib.contextmanager
    def folded(self) -> Iterator[None]:
        """The adapter folded into the base weights for the duration (for generation), then the base
        weights restored bit for bit from a copy.

        Sampling through peft's unmerged LoRA layers costs three extra small matmuls and a Python
        detour per layer and token: 7.0 s against 5.6 s folded for 16 x 48 tokens of SmolLM2-135M in
        bf16 on 2 cores (``bench/policy_cpu.py``; 7-20% over repeated runs). Restoring from a copy rather
        than subtracting the delta again keeps the base exact (in bf16, W + Δ − Δ ≠ W), so the reference
        model never drifts and resumed runs stay identical. Layers that cannot be folded exactly (a 4-bit
        base, unsloth's own fast path) are left as they are."""
        layers = _foldable_lora_layers(self.model) if self.backend == "hf" else []
        if not layers:
            yield
            return
        saved = []
        try:
            with torch.no_grad():
                for layer in layers:
                    weight = layer.base_layer.weight
                    saved.append(weight.detach().clone())
                    for name in layer.active_adapters:
                        if name in layer.lora_A:
                            weight.add_(layer.get_delta_weight(name).to(weight.dtype))
            with self.model.disable_adapter():
                yield
        finally:  # restores exactly the layers touched so far, even if folding failed half-way
            with torch.no_grad():
                for layer, original in zip(layers, saved):
                    layer.base_layer.weight.copy_(original)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise MinirftError(f"checkpoint adapter does not match the model: unexpected keys {unexpected[:3]}")

    def save_adapter(self, path: Path) -> None:
        """PEFT format: adapter_config.json + adapter_model.safetensors (``PeftModel.from_pretrained``)."""
        from minirft.atomic import plain_mode

        self.model.save_pretrained(str(path), safe_serialization=True)
        plain_mode(path)  # safetensors writes its file at 0600; a run dir's files read like plain files


def _contiguous_head_input(model: Any) -> None:
    """Hand the output head a contiguous input. Generation's prefill computes logits of the last
    position only, ``lm_head(hidden[:, -1:, :])``, a strided view; torch 2.13's CPU ``F.linear`` on a
    strided 3-D bf16 input broadcasts the weight per row: 864 MB transient for 16 prompts with
    SmolLM2's 49k x 576 head, +0 MB once the input is contiguous (``bench/policy_cpu.py``)."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def _foldable_lora_layers(model: Any) -> list[Any]:
    """Every LoRA layer of ``model`` if all of them wrap a plain ``nn.Linear`` (else none: fold all or
    nothing, so the folded model is exactly the policy up to rounding)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers or any(type(m.base_layer) is not torch.nn.Linear for m in layers):
        return []
    if any(m.disable_adapters for m in layers):  # inside `reference()`: the base is what is asked for
        return []
    return layers


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def choose_backend(cfg: PolicyConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    if torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "hf"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _dtype(cfg: PolicyConfig, cuda: bool) -> torch.dtype:
    """``auto``: bf16 on CUDA and on CPUs with native bf16 — on a 2-core AVX512-BF16 EPYC, one step's
    update of SmolLM2-135M + LoRA (16 x 100 tokens) takes 5.3 s in bf16 against 9.9 s in fp32
    (``bench/policy_cpu.py``). The
    LoRA weights stay fp32 either way (peft upcasts adapters), so optimizer updates keep full precision."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if cuda or cpu_has_bf16() else torch.float32
    return getattr(torch, cfg.dtype)


def _source(model_name: str, base: Path | None) -> tuple[str, dict]:
    """(path to pass to from_pretrained, extra kwargs) for a registry name, folder or GGUF file."""
    name = model_name
    if base is not None and not Path(name).is_absolute() and (base / name).exists():
        name = str(base / name)
    resolved = resolve_model(name)
    if resolved.is_gguf:
        return str(resolved.path.parent), {"gguf_file": resolved.path.name}
    return str(resolved.path), {}


def _finish_tokenizer(tokenizer: Any, model: Any) -> tuple[list[int], int]:
    eos = tokenizer.eos_token_id
    cfg_eos = getattr(model.config, "eos_token_id", None)
    eos_ids = sorted({i for i in ([eos] + (cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])) if i is not None})
    if not eos_ids:
        raise MinirftError("policy tokenizer has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return eos_ids, tokenizer.pad_token_id


def load_policy(cfg: PolicyConfig, *, seed: int = 0, base_dir: Path | None = None,
                device: str | None = None) -> Policy:
    """Load the base model, attach a fresh LoRA adapter (initialised from ``seed``)."""
    backend = choose_backend(cfg)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if backend == "unsloth":
        if dev.type != "cuda":
            raise MinirftError("policy.backend: unsloth needs a CUDA GPU; use backend: hf on this machine")
        return _load_unsloth(cfg, seed, base_dir, dev)
    return _load_hf(cfg, seed, base_dir, dev)


def _load_hf(cfg: PolicyConfig, seed: int, base_dir: Path | None, dev: torch.device) -> Policy:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path, extra = _source(cfg.model, base_dir)
    cuda = dev.type == "cuda"
    dtype = _dtype(cfg, cuda)
    four_bit = cfg.load_in_4bit if cfg.load_in_4bit != "auto" else cuda
    kwargs: dict[str, Any] = {"dtype": dtype, **extra}
    if four_bit:
        if not cuda:
            raise MinirftError("policy.load_in_4bit: the 4-bit (bitsandbytes) base needs a CUDA GPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MinirftError("policy.load_in_4bit: bitsandbytes is not installed: pip install 'minirft[gpu]'")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16,
        )
        kwargs["device_map"] = {"": dev.index or 0}
    # transformers 5.23 warns that a packed GGUF "is fastest in float32" before it decides to dequantize
    # (it does, without the optional `kernels` package): the weights end up plain bf16, so mute it.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise MinirftError(f"policy.model '{cfg.model}': cannot load ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not four_bit:
        model.to(dev)
    if four_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    eos_ids, pad_id = _finish_tokenizer(tokenizer, model)
    model.generation_config.pad_token_id = pad_id
    _contiguous_head_input(model)
    torch.manual_seed(seed)  # the LoRA A matrices are random: same seed, same adapter
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    return Policy(model, tokenizer, "hf", dev, eos_ids, pad_id)


def _load_unsloth(cfg: PolicyConfig, seed: int, base_dir: Path | None, dev: torch.device) -> Policy:
    import os

    # Unsloth's patched forward skips materialising logits in training unless asked; we need them.
    os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")
    try:
        from unsloth import FastLanguageModel  # noqa: PLC0415 - needs a GPU even to import
    except ImportError as exc:
        raise MinirftError(f"policy.backend: unsloth is not installed or failed to import ({exc})") from None
    path, extra = _source(cfg.model, base_dir)
    if extra:
        raise MinirftError("policy.backend: unsloth loads Hugging Face folders, not GGUF files; use backend: hf")
    four_bit = cfg.load_in_4bit if cfg.load_in_4bit != "auto" else True
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=path, max_seq_length=cfg.max_prompt_tokens + 1024, load_in_4bit=four_bit,
        dtype=_dtype(cfg, True) if cfg.dtype != "auto" else None,
    )
    targets = cfg.lora.target_modules
    if targets == "all-linear":
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=targets,
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False, random_state=seed,
    )
    eos_ids, pad_id = _finish_tokenizer(tokenizer, model)
    return Policy(model, tokenizer, "unsloth", dev, eos_ids, pad_id)


# ------------------------------------------------------------------------------------ prompts
def encode_prompts(policy: Policy, conversations: list[tuple[dict, ...]], max_tokens: int,
                   cut: list[int] | None = None) -> list[list[int]]:
    """Chat template (with the assistant cue) when the tokenizer has one, else the plain text; keeps the
    last ``max_tokens`` tokens of a long prompt (``policy.max_prompt_tokens``), and appends to ``cut``
    the full length of each prompt that was cut."""
    tok = policy.tokenizer
    out = []
    for messages in conversations:
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
        else:
            text = "\n".join(m["content"] for m in messages)
            ids = tok(text, add_special_tokens=True)["input_ids"]
        ids = list(ids)
        if cut is not None and len(ids) > max_tokens:
            cut.append(len(ids))
        out.append(ids[-max_tokens:])
    return out


# ---------------------------------------------------------------------------------- generation
@dataclass
class Generated:
    input_ids: torch.Tensor  # [N, P + C]: left-padded prompt then the completion (right-padded)
    attention_mask: torch.Tensor  # [N, P + C]
    completion_mask: torch.Tensor  # [N, C]: 1 on completion tokens up to and including the first EOS
    prompt_len: int  # P
    # [N, C] log-probs of the sampled tokens under the sampling engine (llama.cpp rollouts), or None when
    # torch sampled them (then the trainer's own log-probs are the sampling ones)
    sampling_logp: torch.Tensor | None = None


def _left_pad(seqs: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(policy: Policy, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float | None,
             top_p: float = 1.0, top_k: int = 0) -> Generated:
    """One completion per prompt (repeat a prompt G times for a group) with the adapter as currently set
    (on, or off inside ``policy.reference()``): sampled at ``temperature``, greedy when it is None."""
    model = policy.model
    ids, mask = _left_pad(prompt_ids, policy.pad_id, policy.device)
    if policy.backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    sampling = ({"do_sample": False} if temperature is None else
                {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None})
    was_training = model.training
    model.eval()
    try:
        with policy.folded():
            out = model.generate(
                input_ids=ids, attention_mask=mask, **sampling, max_new_tokens=max_new_tokens, pad_token_id=policy.pad_id,
                eos_token_id=policy.eos_ids, use_cache=True,
            )
    finally:
        model.train(was_training)
        if policy.backend == "unsloth":
            from unsloth import FastLanguageModel

            FastLanguageModel.for_training(model)
    completion = out[:, ids.shape[1]:]
    is_eos = torch.isin(completion, torch.tensor(policy.eos_ids, device=completion.device))
    # Keep tokens up to and including the first EOS; everything after it is padding.
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    completion_mask = (~after_eos).long()
    attention = torch.cat([mask, completion_mask], dim=1)
    return Generated(out, attention, completion_mask, ids.shape[1])


def decode(policy: Policy, gen: Generated) -> list[str]:
    completion = gen.input_ids[:, gen.prompt_len:]
    texts = []
    for row, m in zip(completion.tolist(), gen.completion_mask.tolist()):
        kept = [t for t, keep in zip(row, m) if keep and t not in policy.eos_ids]
        texts.append(policy.tokenizer.decode(kept, skip_special_tokens=True))
    return texts


# ---------------------------------------------------------------------------------- log-probs
def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int,
                   temperature: float = 1.0, with_entropy: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(token_t | tokens_<t) of the last ``n_completion`` tokens of each row, and (optionally) the
    entropy of the sampling distribution at those positions, both ``[B, n_completion]``.

    The fused kernel ``minirft_kernels.selective_logprobs`` computes them from the decoder's hidden
    states and the lm_head weight without ever holding [B, T, V] logits (Triton on CUDA, a chunked
    torch reference on CPU); logits are divided by the sampling temperature, so the ratio is taken
    under the distribution the samples came from. Position ids follow the attention mask, because
    prompts are left-padded (as in ``generate``). Models whose logits are not a plain matmul
    (soft-capping, scaled or biased heads) take the ordinary logits path instead.
    """
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    targets = input_ids[:, -n_completion:]
    try:
        weight = lm_head_weight(model)
    except KernelError:
        weight = None
    if weight is not None:
        hidden = decoder_hidden_states(model, input_ids, attention_mask, position_ids=position_ids)
        out = selective_logprobs(hidden[:, -n_completion - 1:-1], weight, targets, temperature,
                                 with_entropy=with_entropy)
        return out if with_entropy else (out, None)
    return _logits_logprobs(model, input_ids, attention_mask, position_ids, targets, temperature, with_entropy)


def _logits_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                     targets: torch.Tensor, temperature: float, with_entropy: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unfused path, row by row (the [B, C, V] log-softmax would be another full copy of the logits)."""
    n_completion = targets.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=n_completion + 1, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    logps, entropies = [], []
    for i in range(logits.shape[0]):
        lse = torch.logsumexp(logits[i], dim=-1)
        logps.append(logits[i].gather(-1, targets[i].unsqueeze(-1)).squeeze(-1) - lse)
        if with_entropy:
            with torch.no_grad():
                p = torch.softmax(logits[i].detach(), dim=-1)
                entropies.append(lse.detach() - (p * logits[i].detach()).sum(-1))
    logp = torch.stack(logps)
    return logp, (torch.stack(entropies) if with_entropy else None)
