"""GGUF files that llama.cpp loads: a (merged) llama-architecture model, or a LoRA adapter GGUF.

Written with the ``gguf`` package's :class:`gguf.GGUFWriter`, following the layout of llama.cpp's own
converters (``convert_hf_to_gguf.py`` for the model, ``convert_lora_to_gguf.py`` for the adapter):

- tensor names from ``gguf.get_tensor_name_map`` (``model.layers.3.self_attn.q_proj.weight`` →
  ``blk.3.attn_q.weight``); the output head is left out when it is tied to the embeddings;
- the rows of ``q_proj`` / ``k_proj`` are permuted from Hugging Face's rotate-half RoPE layout to
  llama.cpp's interleaved one (for an adapter: the rows of ``lora_B``, its output side);
- 1-D tensors (norms) stay f32; 2-D ones are f32, f16, bf16 or q8_0 (``gguf.quants``; q8_0 where a row is a
  multiple of 32 values, else f16, as llama.cpp does);
- the tokenizer: copied key for key from the base GGUF when the policy came from one (so llama.cpp
  tokenizes exactly as it did the base), else built from the Hugging Face tokenizer (BPE only;
  pre-tokenizer "default");
- an adapter is ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and
  ``<tensor>.lora_a`` (r x in) / ``<tensor>.lora_b`` (out x r) per adapted weight; llama.cpp scales by
  alpha / r as peft does.

Only the llama architecture (Llama, SmolLM, Mistral-style configs without rope scaling) is written;
anything else is an error that points at llama.cpp's converter and ``--format merged``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from minirft.errors import MinirftError

QUANTS = ("q8_0", "f16", "f32")
SUPPORTED = {"LlamaForCausalLM", "MistralForCausalLM"}


def _arch_check(config: Any) -> None:
    archs = set(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "")
    if not (archs & SUPPORTED or model_type in ("llama", "mistral")):
        raise MinirftError(f"export: GGUF export supports llama-architecture models (SmolLM2, Llama, Mistral); "
                           f"this one is {model_type or sorted(archs)}. Export --format merged and convert it "
                           "with llama.cpp's convert_hf_to_gguf.py")
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or rope_type != "default":
        raise MinirftError("export: models with rope scaling are not written as GGUF here; export --format merged "
                           "and use llama.cpp's convert_hf_to_gguf.py")


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's q/k row order (two halves per head) to llama.cpp's (interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(array: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    """(data, raw ggml type or None) for GGUFWriter.add_tensor."""
    import gguf

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 1 or quant == "f32":
        return array, None
    if quant == "q8_0" and array.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(array, qtype), qtype
    if quant == "bf16":
        qtype = gguf.GGMLQuantizationType.BF16
        return gguf.quants.quantize(array, qtype), qtype
    return array.astype(np.float16), None


def _file_type(quant: str) -> int:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "bf16": gguf.LlamaFileType.MOSTLY_BF16}[quant]


def _hparams(writer: Any, config: Any, name: str) -> None:
    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or n_head)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _copy_tokenizer(writer: Any, source_gguf: Path) -> None:
    """Every ``tokenizer.*`` key of the base GGUF, as it is."""
    import gguf

    reader = gguf.GGUFReader(str(source_gguf))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def _hf_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    """A BPE (GPT-2 style) tokenizer as llama.cpp's "gpt2" model: tokens, types, merges, special ids."""
    import gguf

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text()) if (tokenizer_dir / "tokenizer.json").is_file() else {}
    if spec.get("model", {}).get("type") != "BPE":
        raise MinirftError("export: GGUF export builds BPE tokenizers only; this base's tokenizer is "
                           f"{spec.get('model', {}).get('type', 'unknown')}: use llama.cpp's convert_hf_to_gguf.py "
                           "on a --format merged export")
    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    tokens, types = [], []
    for i in range(max(vocab_size, len(vocab))):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif reverse[i] in added:
            tokens.append(reverse[i])
            special = reverse[i] in specials or (spec.get("added_tokens") and any(
                a.get("content") == reverse[i] and a.get("special") for a in spec["added_tokens"]))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    import logging

    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # "no merges found" for a byte-level vocabulary
    special_vocab = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    if not special_vocab.merges:  # legal (bytes only), but llama.cpp wants the key and GGUF no empty arrays
        writer.add_key_value(gguf.Keys.Tokenizer.MERGES, [""], gguf.GGUFValueType.ARRAY,
                             sub_type=gguf.GGUFValueType.STRING)
    special_vocab.add_to_gguf(writer, quiet=True)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and not special_vocab.chat_template:
        writer.add_chat_template(template)


def write_model_gguf(model: Any, tokenizer: Any, out: Path, *, quant: str, tokenizer_dir: Path,
                     source_gguf: Path | None = None, name: str = "minirft") -> dict[str, int]:
    """Write ``model`` (a plain transformers causal LM, adapter already merged) as a GGUF file.
    Returns {ggml type name: tensor count}."""
    import gguf

    config = model.config
    _arch_check(config)
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    writer = gguf.GGUFWriter(str(out), "llama")
    _hparams(writer, config, name)
    writer.add_file_type(_file_type(quant))
    if source_gguf is not None:
        _copy_tokenizer(writer, source_gguf)
    else:
        _hf_tokenizer(writer, tokenizer, tokenizer_dir, config.vocab_size)
    counts: dict[str, int] = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue
        if key.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise MinirftError(f"export: no GGUF name for tensor {key}")
        w = tensor.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            w = permute_rows(w, n_head)
        elif key.endswith("k_proj.weight"):
            w = permute_rows(w, n_kv)
        data, raw = encode(w, quant)
        writer.add_tensor(target, data, raw_dtype=raw)
        kind = raw.name if raw is not None else {np.float32: "F32", np.float16: "F16"}[data.dtype.type]
        counts[kind] = counts.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<base>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def write_lora_gguf(adapter_dir: Path, config: Any, out: Path, *, quant: str, name: str = "minirft") -> int:
    """The PEFT adapter in ``adapter_dir`` as a llama.cpp LoRA GGUF for a base with ``config``.
    Returns the number of adapted weights."""
    from safetensors.torch import load_file

    _arch_check(config)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("use_dora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise MinirftError("export: DoRA and per-layer rank/alpha patterns have no llama.cpp LoRA equivalent")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):
        alpha = alpha * r ** 0.5  # rsLoRA scales by alpha / sqrt(r); llama.cpp by alpha / r
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return write_lora_state(state, alpha, config, out, quant=quant, name=name)


def write_lora_state(state: dict[str, Any], alpha: float, config: Any, out: Path, *, quant: str,
                     name: str = "minirft") -> int:
    """A PEFT adapter's state dict (``lora_A`` / ``lora_B`` tensors, e.g. ``get_peft_model_state_dict``)
    as a llama.cpp LoRA GGUF, scaled by ``alpha`` / r. Returns the number of adapted weights.

    The trainer's llama.cpp rollouts write the live adapter through this every step, without a
    PEFT folder on disk in between."""
    import gguf

    _arch_check(config)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise MinirftError(f"export: unexpected tensor {key} in the adapter (only lora_A / lora_B are supported)")
        pairs.setdefault(m.group("base") + ".weight", {})[m.group("ab")] = tensor.detach().float().cpu().numpy()
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    writer.add_file_type(_file_type(quant))
    for base, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise MinirftError(f"export: {base} has only lora_{''.join(ab)} in the adapter")
        target = names.get_name(base, try_suffixes=(".weight",))
        if target is None:
            raise MinirftError(f"export: no GGUF name for adapted weight {base}")
        a, b = ab["A"], ab["B"]  # [r, in], [out, r]
        if base.endswith("q_proj.weight"):
            b = permute_rows(b, n_head)
        elif base.endswith("k_proj.weight"):
            b = permute_rows(b, n_kv)
        for suffix, arr in ((".lora_a", a), (".lora_b", b)):
            data, raw = encode(arr, quant)
            writer.add_tensor(target + suffix, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)


def gguf_precision(path: Path) -> str:
    """The weight types of a GGUF file, most frequent first ("Q4_1 x 210, F32 x 61, Q8_0 x 1")."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return ", ".join(f"{k} x {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
