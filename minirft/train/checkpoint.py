"""Checkpoints: everything a killed run needs to continue as if it had never stopped.

``checkpoints/step-N/`` holds the adapter (PEFT format, safetensors), the optimizer and scheduler
state, the RNG states (python, numpy, torch CPU and CUDA) and ``state.json`` (step, data position).
It is written into a temporary sibling and renamed into place (``minirft.atomic.atomic_dir``), and
``state.json`` is written last, so a directory named ``step-N`` is always complete; temp dirs
(``.step-N.*.tmp``) left by a kill are ignored and cleaned up.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minirft.atomic import atomic_dir
from minirft.errors import MinirftError

STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_root: Path, step: int, *, policy: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep_last: int) -> Path:
    target = ckpt_root / f"step-{step}"
    with atomic_dir(target) as tmp:
        policy.save_adapter(tmp / "adapter")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    prune(ckpt_root, keep_last)
    return target


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
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


def load_checkpoint(path: Path, *, policy: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore adapter, optimizer, scheduler and RNG; return state.json (step, data position…)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
        adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        policy.load_adapter_state(adapter)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise MinirftError(f"{path}: cannot load checkpoint ({exc})") from None
    return state
