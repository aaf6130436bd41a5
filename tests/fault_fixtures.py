"""A small world for the bad-input and fault tests: a tiny policy folder, prompts, a tiny GGUF judge and
recipes around them, all in one temp folder; plus helpers to run the CLI in-process or as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from judge_fixtures import write_tiny_gguf  # noqa: E402
from train_fixtures import make_tiny_model, write_prompts  # noqa: E402

from minirft.cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def make_world(d: Path) -> Path:
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    write_tiny_gguf(d / "judge.gguf")
    return d


def toy_recipe(d: Path, *, with_judge: bool = False, name: str = "toy.yaml", **sections) -> Path:
    """A recipe next to the world's files (relative paths), with ``sections`` merged in (dicts update)."""
    data = {
        "name": "toy",
        "policy": {"model": "model", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"}],
        "data": {"path": "prompts.jsonl"},
        "generation": {"group_size": 2, "max_new_tokens": 6},
        "training": {"steps": 2, "prompts_per_step": 2, "lr": 1e-2},
        "checkpoint": {"every": 2, "keep_last": 2},
    }
    if with_judge:
        data["judge"] = {"model": "judge.gguf", "n_threads": 1, "retries": 1, "rationales": "none",
                         "criteria": [{"name": "vowels", "question": "Mostly vowels?"}]}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = d / name
    path.write_text("# a toy recipe for the fault tests\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(*args, cwd: Path | None = None):
    """The CLI in-process (stderr mixed into output, as a terminal shows it)."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "kernels"), str(ROOT / "tests"), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    e.pop("MINIRFT_VERBOSE", None)
    return e


def run_cli(*args, cwd: Path | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``python -m minirft ARGS`` as its own process (what a user's terminal runs)."""
    return subprocess.run([sys.executable, "-m", "minirft", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]
