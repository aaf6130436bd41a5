"""A tiny recipe for the TRL engine and judge_reward tests: the random 2-layer policy of
train_fixtures and the tiny random GGUF judge of judge_fixtures (both real models, milliseconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def tiny_recipe(tmp: Path, gguf: str, *, mode: str = "rubric", name: str = "tinytrl", **sections) -> Path:
    from train_fixtures import make_tiny_model, write_prompts

    model = tmp / "tiny-model"
    if not model.exists():
        make_tiny_model(model)
    data = write_prompts(tmp / "prompts.jsonl")
    judge = {"model": gguf, "n_threads": 1, "max_seqs": 4, "n_ctx": 2048, "rationale_max_tokens": 4, "mode": mode}
    if mode == "rubric":
        judge["criteria"] = [{"name": "answers", "question": "Does the response answer the request?"},
                             {"name": "polite", "question": "Is the response polite?"}]
    recipe = {
        "name": name,
        "policy": {"model": str(model), "backend": "hf", "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
        "judge": judge,
        "rewards": [{"type": "length", "max_chars": 40}],
        "data": {"path": str(data), "eval_path": str(data)},
        "generation": {"group_size": 2, "max_new_tokens": 8},
        "training": {"steps": 2, "prompts_per_step": 2, "lr": 1e-3},
        "logging": {"samples_per_step": 4},
    }
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value) if isinstance(value, dict) else recipe.__setitem__(key, value)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "kernels"), str(ROOT / "tests")])
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1")
    return e


# On a machine without GPUs, `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate's
# simple launcher needs an MPI hostfile for several CPU processes); --multi_gpu starts torchrun, and the
# TRL engine selects CPU + gloo when CUDA is absent.
def accelerate_cmd(n: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout, cwd=cwd or ROOT)
