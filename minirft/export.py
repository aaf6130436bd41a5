"""`minirft export RUN_DIR --format merged|gguf|lora-gguf --out PATH`: the tuned policy in a form other
tools serve.

- ``merged``: a Hugging Face folder (safetensors, config, tokenizer) with the LoRA adapter folded into
  the base weights (peft's ``merge_and_unload``), for ``AutoModelForCausalLM.from_pretrained``, vLLM…
- ``gguf``: the merged model as one GGUF file for llama.cpp, Ollama, LM Studio (``--quant``: q8_0,
  f16 or f32). When the base came from a GGUF (the embedded SmolLM2 is Q4_1), training saw its weights
  dequantized, so the export carries the base GGUF's precision plus the adapter's delta, written at
  ``--quant``: no better than the base file, only larger.
- ``lora-gguf``: the adapter alone as a llama.cpp LoRA GGUF, applied at load time to the base GGUF
  (``llama-cli -m base.gguf --lora adapter.gguf``, ``Llama(model_path=..., lora_path=...)``).

The base is the run's ``policy.model`` (its ``recipe.resolved.yaml``), loaded in float32 for the merge;
the adapter is ``RUN_DIR/adapter`` (or, for a run that has not finished, its latest checkpoint's).
GGUF files are written by :mod:`minirft.gguf_export` with the ``gguf`` package.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


from minirft.errors import MinirftError
from minirft.rundir import WRITE_ERRNOS, check_output, write_error

FORMATS = ("merged", "gguf", "lora-gguf")


def find_adapter(run_dir: Path) -> Path:
    """RUN_DIR/adapter, else the adapter of the run's latest complete checkpoint."""
    final = run_dir / "adapter"
    if (final / "adapter_model.safetensors").is_file():
        return final
    from minirft.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir / "checkpoints")
    if found is not None and (found[1] / "adapter" / "adapter_model.safetensors").is_file():
        return found[1] / "adapter"
    raise MinirftError(f"{run_dir}: no trained adapter (no adapter/ and no complete checkpoint)")


def run_recipe(run_dir: Path) -> Any:
    from minirft.recipe import load_recipe

    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise MinirftError(f"{run_dir}: not a run dir (no recipe.resolved.yaml)")
    return load_recipe(resolved)


def base_source(recipe: Any) -> tuple[str, dict, Path | None]:
    """(from_pretrained path, extra kwargs, the base GGUF file or None) of the run's policy."""
    from minirft.train.policy import _source

    path, extra = _source(recipe.policy.model, recipe.source.parent if recipe.source else None)
    gguf_file = Path(path) / extra["gguf_file"] if "gguf_file" in extra else None
    return path, extra, gguf_file


def load_base(recipe: Any, dtype: Any = None) -> tuple[Any, Any, Path | None]:
    """The run's base model (float32 unless told) and tokenizer, and the base GGUF file if it came from one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path, extra, gguf_file = base_source(recipe)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # transformers' GGUF dequantization draws its own tqdm bar on stderr: hidden like the rest.
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(path, **extra)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **extra)
    except (OSError, ValueError) as exc:
        raise MinirftError(f"policy.model '{recipe.policy.model}': cannot load ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if gguf_file is not None:
        # A GGUF is dequantized on load: the weights are plain tensors, but transformers still marks the
        # model "quantized with gguf" and refuses to save it. Drop the marker.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.eval()
    return model, tokenizer, gguf_file


def merged_model(recipe: Any, adapter: Path) -> tuple[Any, Any, Path | None]:
    """Base + adapter folded into one plain transformers model (float32)."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # peft imports it; its CPU-kernel notice is noise
    from peft import PeftModel

    base, tokenizer, gguf_file = load_base(recipe)
    with warnings.catch_warnings():  # transformers' deprecation notices raised from inside peft
        warnings.simplefilter("ignore", FutureWarning)
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    model.eval()
    return model, tokenizer, gguf_file


def export_merged(model: Any, tokenizer: Any, out: Path, dtype: str) -> None:
    import torch

    from minirft.atomic import atomic_dir

    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = model.to(getattr(torch, dtype))
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))


def export(run_dir: Path, fmt: str, out: Path, *, quant: str | None = None, dtype: str = "float32",
           adapter: Path | None = None, log: Any = None, force: bool = False) -> dict[str, Any]:
    """Export a run's tuned policy; returns a summary (format, out, precision, notes). An existing
    ``out`` (file or non-empty folder, every format alike) is replaced only with ``force``; a write
    that fails (read-only folder, full disk) is one MinirftError and leaves no partial file."""
    try:
        return _export(run_dir, fmt, out, quant=quant, dtype=dtype, adapter=adapter, log=log, force=force)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise write_error(out, exc, "the export") from None


def _export(run_dir: Path, fmt: str, out: Path, *, quant: str | None, dtype: str, adapter: Path | None,
            log: Any, force: bool) -> dict[str, Any]:
    from minirft import gguf_export

    say = log or (lambda msg: None)
    if fmt not in FORMATS:
        raise MinirftError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    adapter = adapter or find_adapter(run_dir)
    quant = quant or ("q8_0" if fmt == "gguf" else "f16")
    if quant not in gguf_export.QUANTS:
        raise MinirftError(f"--quant: expected one of {', '.join(gguf_export.QUANTS)}, got {quant!r}")
    summary: dict[str, Any] = {"format": fmt, "out": str(out), "adapter": str(adapter), "base": recipe.policy.model}
    if fmt in ("gguf", "lora-gguf") and out.suffix.lower() != ".gguf":
        raise MinirftError(f"--out: a GGUF export is one file ending in .gguf, got {out}")
    check_output(out, force=force)  # before any model loads

    if fmt == "lora-gguf":
        path, extra, gguf_file = base_source(recipe)
        config = _base_config(path, extra)
        tmp = out.with_name(out.name + ".partial")
        with _removed_on_error(tmp):
            n = gguf_export.write_lora_gguf(adapter, config, tmp, quant=quant, name=f"{run_dir.name} LoRA")
            _check_whole(tmp, out)
            tmp.replace(out)
        summary.update(adapted_weights=n, precision=quant, base_gguf=str(gguf_file) if gguf_file else None)
        if gguf_file is not None:
            summary["note"] = f"apply to the base it was trained on: --lora {out} with -m {gguf_file}"
        else:
            summary["note"] = ("the base is a Hugging Face folder: convert it with llama.cpp's convert_hf_to_gguf.py "
                               "(or the same layout) and apply this adapter to that file")
        return summary

    say(f"merging {adapter} into {recipe.policy.model} (float32)…")
    model, tokenizer, gguf_file = merged_model(recipe, adapter)
    if fmt == "merged":
        export_merged(model, tokenizer, out, dtype)
        summary["precision"] = dtype
        return summary
    with tempfile.TemporaryDirectory() as tok_dir:  # the tokenizer files SpecialVocab reads (merges, ids)
        tokenizer.save_pretrained(tok_dir)
        tmp = out.with_name(out.name + ".partial")
        with _removed_on_error(tmp):
            counts = gguf_export.write_model_gguf(model, tokenizer, tmp, quant=quant, tokenizer_dir=Path(tok_dir),
                                                  source_gguf=gguf_file, name=f"{run_dir.name} merged")
            _check_whole(tmp, out)
            tmp.replace(out)
    summary["tensor_types"] = counts
    summary["precision"] = quant
    if gguf_file is not None:
        base_precision = gguf_export.gguf_precision(gguf_file)
        summary["base_precision"] = base_precision
        summary["note"] = (f"the base came from {gguf_file.name} ({base_precision}); training used its weights "
                           f"dequantized, so this {quant} file holds those weights plus the adapter's delta: "
                           "the base's precision, not better")
    return summary


def _check_whole(tmp: Path, out: Path) -> None:
    """Read the written GGUF back before it takes ``out``'s place: gguf's writer (numpy ``tofile``) can
    stop at a full disk without an error, leaving a truncated file that looks written."""
    import gguf

    size = tmp.stat().st_size
    try:
        reader = gguf.GGUFReader(str(tmp))
        whole = all(t.data_offset + t.n_bytes <= size for t in reader.tensors)
        del reader
    except Exception:  # noqa: BLE001 - any failure to parse it back means it is not whole
        whole = False
    if not whole:
        raise write_error(out, OSError(0, f"only {size} bytes reached the disk; is it full?"), "the export")


@contextmanager
def _removed_on_error(tmp: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _base_config(path: str, extra: dict) -> Any:
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoConfig.from_pretrained(path, **extra)
    except (OSError, ValueError) as exc:
        raise MinirftError(f"cannot read the base model's config at {path} ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
