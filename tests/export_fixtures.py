"""Run dirs with a non-trivial LoRA adapter (peft's own format) for the export tests, and log-probs from
torch and from llama.cpp (llama-cpp-python) for the same token ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def make_adapter_run(run: Path, policy_model: str, *, r: int = 4, alpha: float = 8.0, scale: float = 0.2,
                     seed: int = 1) -> Path:
    """A run dir (recipe.resolved.yaml + adapter/) whose adapter's B matrices are random (peft starts
    them at zero, which would make every export trivially equal to the base)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from minirft.export import load_base
    from minirft.recipe import validate_recipe

    run.mkdir(parents=True, exist_ok=True)
    recipe = {"name": "exported", "policy": {"model": policy_model, "lora": {"r": r, "alpha": alpha}},
              "rewards": [{"type": "length"}], "data": {"path": str(run / "prompts.jsonl")}}
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    base, _, _ = load_base(validate_recipe(recipe))
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    model.save_pretrained(str(run / "adapter"), safe_serialization=True)
    return run


def torch_logprobs(model, ids: list[int]) -> np.ndarray:
    """[T, V] log-softmax of the next-token logits at every position (float64)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def llama_logprobs(model_path: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    """The same from llama.cpp: evaluate the ids, read every position's logits (logits_all)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_path), lora_path=str(lora) if lora else None, n_ctx=256, n_batch=256,
                logits_all=True, verbose=False, n_threads=1, seed=0)
    try:
        llm.eval(ids)
        s = np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
    m = s.max(axis=-1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=-1, keepdims=True))


def target_logprobs(lp: np.ndarray, ids: list[int]) -> np.ndarray:
    """log p(ids[t+1] | ids[:t+1]): the log-prob of each actual next token."""
    return lp[np.arange(len(ids) - 1), ids[1:]]
