"""Checkpoints: everything a killed run needs to continue as if it had never stopped.

``checkpoints/step-N/`` holds the adapter (PEFT format, safetensors), the optimizer and scheduler
state, the RNG states (python, numpy, torch CPU and CUDA), ``state.json`` (step, data position) and,
written last, ``manifest.json``: the size and sha256 of every other file. It is written into a
temporary sibling and renamed into place (``minirft.atomic.atomic_dir``), so a directory named
``step-N`` is complete when written; temp dirs (``.step-N.*.tmp``) left by a kill are ignored and
cleaned up. A checkpoint damaged afterwards (a truncated or edited file, a full disk) fails its
manifest check before anything is loaded, and ``--resume`` falls back to the previous one.

Trust: ``optimizer.pt``, ``scheduler.pt`` and ``rng.pt`` hold tensors and plain Python values only
(the numpy RNG state is stored as a tensor) and are read with ``torch.load(weights_only=True)``,
which refuses pickled code: resuming someone else's run dir executes nothing from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minirft.atomic import atomic_dir
from minirft.errors import MinirftError

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def check_manifest(folder: Path) -> str | None:
    """What is wrong with the checkpoint's files (None when they are as written)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return None  # written before manifests existed: the load attempt is the check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    for name, want in files.items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        size = p.stat().st_size
        if size != want["size"]:
            return f"{name} is {size} bytes, {want['size']} were written"
        if _sha256(p) != want["sha256"]:
            return f"{name} does not match its sha256"
    return None


def save_checkpoint(ckpt_root: Path, step: int, *, policy: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep_last: int) -> Path:
    target = ckpt_root / f"step-{step}"
    with atomic_dir(target) as tmp:
        policy.save_adapter(tmp / "adapter")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
        write_manifest(tmp)  # last: its presence says every other file was written whole
    prune(ckpt_root, keep_last)
    return target


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Checkpoint folders with a state.json, oldest first (see :func:`read_checkpoint` for the full check)."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for d in ckpt_root.iterdir():
        m = STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / "state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def prune(ckpt_root: Path, keep_last: int) -> None:
    for _, d in list_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(d, ignore_errors=True)
    for d in ckpt_root.glob(".step-*"):  # temp dirs of a checkpoint interrupted by a kill
        shutil.rmtree(d, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


@dataclass
class CheckpointData:
    """A checkpoint read whole into memory and checked, not yet applied to a model."""

    path: Path
    state: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict

    @property
    def step(self) -> int:
        return int(self.state["step"])


def read_checkpoint(path: Path) -> CheckpointData:
    """Verify (manifest) and read every part of a checkpoint; a damaged one is a MinirftError saying why."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    problem = check_manifest(path)
    if problem:
        raise MinirftError(f"{path}: damaged checkpoint: {problem}")
    try:
        state = json.loads((path / "state.json").read_text())
        int(state["step"]), int(state["data_position"])
        adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", weights_only=True)
        scheduler = torch.load(path / "scheduler.pt", weights_only=True)
        rng = torch.load(path / "rng.pt", weights_only=True)
    except pickle.UnpicklingError:
        raise MinirftError(f"{path}: damaged checkpoint: UnpicklingError: it holds pickled objects other than "
                           "tensors and plain values (written by an older minirft, or edited); not loaded, "
                           "since unpickling them could run code") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, SafetensorError) as exc:
        raise MinirftError(f"{path}: damaged checkpoint: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(rng, dict) or not isinstance(rng.get("numpy"), dict):
        raise MinirftError(f"{path}: damaged checkpoint: rng.pt does not hold the RNG states")
    return CheckpointData(path, state, adapter, optimizer, scheduler, rng)


def find_resumable(ckpt_root: Path) -> tuple[CheckpointData | None, list[str]]:
    """The newest checkpoint that reads back whole, and why each newer one was skipped."""
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(ckpt_root)):
        try:
            return read_checkpoint(path), skipped
        except MinirftError as exc:
            skipped.append(str(exc))
    return None, skipped


def apply_checkpoint(data: CheckpointData, *, policy: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore adapter, optimizer, scheduler and RNG; return state.json (step, data position…)."""
    try:
        policy.load_adapter_state(data.adapter)
        optimizer.load_state_dict(data.optimizer)
        scheduler.load_state_dict(data.scheduler)
        set_rng_state(data.rng)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise MinirftError(f"{data.path}: checkpoint does not fit this run's model or optimizer "
                           f"({_first_problem(exc)}); resume with the recipe it was saved with (policy.lora.*, "
                           "policy.model), or start a new run") from None
    return data.state


def _first_problem(exc: BaseException) -> str:
    """One line of a load error: torch's size-mismatch report lists every tensor on a line of its own."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "size mismatch" in ln or "shape" in ln), lines[0] if lines else repr(exc))
    more = len([ln for ln in lines if "size mismatch" in ln]) - 1
    detail = detail[:300] + (f" (and {more} more)" if more > 0 else "")
    return detail


def load_checkpoint(path: Path, *, policy: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Read, verify and restore one checkpoint (see :func:`read_checkpoint`, :func:`apply_checkpoint`)."""
    return apply_checkpoint(read_checkpoint(path), policy=policy, optimizer=optimizer, scheduler=scheduler)
