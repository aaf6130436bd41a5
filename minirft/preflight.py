"""Everything knowable from a recipe and its files, checked before any model loads.

``minirft recipes validate``, ``train`` (and ``train --resume``) and ``judge`` call :func:`check_recipe`
first, so a typo in a model path, a data line that is not JSON or a reward function that does not
exist is reported in a second, naming the file and line (or the command-line override) and the key —
not after a 45-second model load, and never half-way through a run.

Checks: the data files (every row), the rule rewards and eval checks (regexes compile, ``python``
functions exist and import), and both models: the name resolves (a short name that is installed, a
local file or folder) and what it points at is readable — a GGUF file starts with the GGUF magic,
a Hugging Face folder has a parseable config.json and weight files.
"""

from __future__ import annotations

import json
from pathlib import Path

from minirft.data import PromptRow, load_prompts
from minirft.errors import MinirftError
from minirft.models import EMBEDDED, ResolvedModel, resolve_model
from minirft.recipe import Recipe
from minirft.rewards import build_rewards

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.pt")


def _readable(model: ResolvedModel) -> str | None:
    """What is wrong with a resolved model's file or folder (None when it looks loadable)."""
    if model.is_gguf:
        try:
            with open(model.path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            return f"{model.path}: cannot read it ({exc.strerror})"
        if magic != b"GGUF":
            what = "is empty" if not magic else f"starts with {magic!r}, not the GGUF magic b'GGUF'"
            return f"{model.path} is not a GGUF file (it {what})"
        return None
    config = model.path / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{config}: not a readable JSON file ({exc})"
    if not any(next(model.path.glob(p), None) for p in WEIGHT_PATTERNS):
        return f"{model.path}: a Hugging Face folder without weights (no *.safetensors or *.bin file)"
    return None


def check_model(recipe: Recipe, section: str, member: int | None = None) -> ResolvedModel:
    """Resolve ``<section>.model`` (policy or judge; ``member``: judge.panel's k-th model) and check it is
    readable. A relative path is taken relative to the recipe's folder when it exists there (else the
    working directory); the result's ``name`` is what to hand the loader."""
    cfg = getattr(recipe, section)
    key: tuple = ("model",)
    if member is not None:
        cfg, key = cfg.panel[member], ("panel", member, "model")
    name = cfg.model
    if recipe.source is not None and name not in EMBEDDED and not Path(name).expanduser().is_absolute():
        local = recipe.source.parent / name  # a relative model path is relative to the recipe, like data paths
        if local.exists():
            name = str(local)
    dotted = ".".join(map(str, (section, *key)))
    where = f"{recipe.where(section, *key)}: {dotted}"
    backend = getattr(cfg, "backend", None) or recipe.judge.backend if section == "judge" else None
    try:
        model = resolve_model(name)
    except MinirftError as exc:
        raise MinirftError(f"{where}: {exc}") from None
    problem = _readable(model)
    if problem:
        raise MinirftError(f"{where}: {problem}")
    if section == "judge" and backend == "llama_cpp" and not model.is_gguf:
        raise MinirftError(f"{where}: {model.path} is a Hugging Face folder; the llama_cpp backend needs a .gguf "
                           "file (or set judge.backend: torch)")
    return model


def needs_judge_model(recipe: Recipe) -> bool:
    j = recipe.judge
    return j is not None and not j.self_judge and j.backend != "http" and not j.panel


def check_panel(recipe: Recipe) -> None:
    """Every local model of judge.panel resolves and is readable (an http member names a server's model)."""
    j = recipe.judge
    for k, m in enumerate(j.panel if j is not None else []):
        if (m.backend or j.backend) != "http":
            m.model = check_model(recipe, "judge", member=k).name


def check_data(recipe: Recipe) -> list[PromptRow]:
    """The training rows (every line checked) and every held-out set's rows (data.eval_path,
    data.eval_sets): each file exists and parses."""
    path = recipe.resolve_path(recipe.data.path)
    if not path.exists():
        raise MinirftError(f"{recipe.where('data', 'path')}: data.path: no such data file {path}")
    out = load_prompts(path, recipe.data.columns)
    for name, value in recipe.data.held_out().items():
        key = ("eval_path",) if name == "heldout" and recipe.data.eval_path else ("eval_sets", name)
        dotted = "data." + ".".join(key)
        path = recipe.resolve_path(value)
        if not path.exists():
            raise MinirftError(f"{recipe.where('data', *key)}: {dotted}: no such data file {path}")
        try:
            load_prompts(path, recipe.data.columns)
        except MinirftError as exc:
            raise MinirftError(f"{recipe.where('data', *key)}: {dotted}: {exc}") from None
    return out


def check_rewards(recipe: Recipe) -> None:
    build_rewards(recipe.rewards)
    build_rewards(recipe.data.eval_checks, key="data.eval_checks")


def _at(recipe: Recipe, message: str) -> str:
    """Prefix a key-path message (``rewards.0.function: …``) with where that key was set."""
    head = message.split(":", 1)[0]
    if head and " " not in head and head[0].isalpha():
        parts = tuple(int(p) if p.isdigit() else p for p in head.split("."))
        return f"{recipe.where(*parts)}: {message}"
    return message


def check_recipe(recipe: Recipe, *, policy: bool = True, judge: bool = True, data: bool = True) -> list[PromptRow]:
    """Every check above; returns the training rows. Raises MinirftError on the first problem."""
    rows = check_data(recipe) if data else []
    try:
        check_rewards(recipe)
    except MinirftError as exc:
        raise MinirftError(_at(recipe, str(exc))) from None
    if policy:
        check_model(recipe, "policy")
    if judge and needs_judge_model(recipe):
        check_model(recipe, "judge")
    if judge:
        check_panel(recipe)
    return rows
