"""Who samples the rollouts (``generation.engine``), chosen once per run.

- ``torch``: Hugging Face ``generate`` on the policy (the adapter folded into a bf16/fp32 base), or
  Unsloth's own fast generation for ``policy.backend: unsloth``. No engine object: ``rollout`` calls
  :func:`minirft.train.policy.generate`.
- ``torch_graph``: the policy itself with a static KV cache, each decode step replayed as one CUDA graph
  (:mod:`minirft.train.graph_rollout`); transformers + peft policies.
- ``llama_cpp``: the policy's base in llama.cpp with the live LoRA applied each step
  (:mod:`minirft.train.llama_rollout`); truncated importance sampling corrects its numerics.
- ``vllm``: only through ``--engine trl`` (TRL's own vLLM integration, ``use_vllm``); an error here.

``auto`` picks the measured winner for the device and backend (docs/gpu.md; CPU figures in
``bench/results/rollout_engine_generation_{portable,native}.json``):

- CUDA: ``torch_graph`` for the ``hf`` backend (``bench/gpu_check.py``), ``torch`` for unsloth;
- CPU: ``llama_cpp`` when the policy model is a GGUF file and llama.cpp is not the slower of the two —
  torch in bf16 on an AVX512-BF16 CPU against a llama.cpp built without AVX512-BF16 (the portable build)
  is (0.75–0.95× HF generate, against 1.58× with ``scripts/setup.sh``'s native build); else ``torch``.
"""

from __future__ import annotations

from typing import Protocol

import torch

from minirft.errors import MinirftError
from minirft.llamacpp import cpu_features
from minirft.models import resolve_model
from minirft.recipe import Recipe
from minirft.train.policy import Generated, Policy, choose_backend, cpu_has_bf16


class RolloutEngine(Protocol):
    """A sampler other than HF ``generate``: G completions per prompt, group-major."""

    name: str  # the generation.engine value it implements

    def generate(self, policy: Policy, prompt_ids: list[list[int]], group_size: int) -> Generated: ...

    @property
    def step_timings(self) -> dict[str, float]:
        """Extra step metrics of the last ``generate`` (seconds), logged with the step."""
        ...

    def take_notes(self) -> list[str]:
        """Warnings the engine has to report since the last call (logged as warning events)."""
        ...

    def close(self) -> None: ...


def choose_engine(recipe: Recipe) -> str:
    """``generation.engine`` resolved for this machine (see the module docstring)."""
    engine = recipe.generation.engine
    if engine != "auto":
        return engine
    backend = choose_backend(recipe.policy)
    if torch.cuda.is_available():
        return "torch_graph" if backend == "hf" else "torch"
    if backend == "unsloth":
        return "torch"
    try:
        is_gguf = resolve_model(recipe.model_name(recipe.policy.model)).is_gguf
    except MinirftError:
        return "torch"
    if not is_gguf:
        return "torch"
    dtype = recipe.policy.dtype
    torch_bf16 = dtype == "bfloat16" or (dtype == "auto" and cpu_has_bf16())
    return "torch" if torch_bf16 and "AVX512_BF16" not in cpu_features() else "llama_cpp"


def engine_name(engine: RolloutEngine | None) -> str:
    """What samples the run's rollouts: the engine's name, or torch (HF generate) without one."""
    return engine.name if engine is not None else "torch"


def check_engine(recipe: Recipe) -> None:
    """Refuse, before any model loads, an engine minirft's own trainer cannot run."""
    if recipe.generation.engine == "vllm":
        raise MinirftError(f"{recipe.where('generation', 'engine')}: generation.engine: vllm samples through "
                           "TRL's vLLM integration: run with --engine trl (vLLM installed), or use "
                           "torch_graph / llama_cpp")


def open_generator(recipe: Recipe, policy: Policy) -> RolloutEngine | None:
    """The engine object ``generation.engine`` resolves to, or None for HF ``generate``."""
    check_engine(recipe)
    engine = choose_engine(recipe)
    if engine == "llama_cpp":
        from minirft.train.llama_rollout import LlamaGenerator

        return LlamaGenerator(recipe, policy)
    if engine == "torch_graph":
        from minirft.train.graph_rollout import GraphGenerator, supports

        if recipe.generation.engine == "auto" and not supports(policy.model.config):
            return None  # sliding-window layers: HF generate (``choose_engine`` could not know before loading)
        return GraphGenerator(recipe, policy)
    return None
