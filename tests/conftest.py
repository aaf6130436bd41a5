"""Shared test setup: one thread (two busy cores make tiny ops 100x slower), Triton's CPU interpreter
set before any kernel module is imported, and no test ever touches a model hub."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The fixture modules (tests/*_fixtures.py, tests/fixtures/make_run.py) import by name from any test file.
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "fixtures")]


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> str:
    """A tiny random llama GGUF (judge_fixtures.write_tiny_gguf): a real llama.cpp judge in milliseconds."""
    from judge_fixtures import write_tiny_gguf

    return str(write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama with its tokenizer (``model/``, train_fixtures.make_tiny_model) and eight
    prompts (``prompts.jsonl``), made once per test module."""
    from train_fixtures import make_tiny_model, write_prompts

    d = tmp_path_factory.mktemp("tiny")
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    return d
