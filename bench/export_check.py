"""How close each `minirft export` format is to the torch model it came from (docs/benchmarks.md quotes this).

For a base (the tiny random test model, and the embedded SmolLM2-135M-Instruct, a Q4_1 GGUF) with a
random LoRA adapter (peft's format; B ~ N(0, scale), since peft starts B at zero), measures on one
chat-formatted text, over the log-prob of each actual next token:

- merged: the reloaded HF folder vs base+adapter in torch (float32);
- gguf (q8_0, f16): llama.cpp's log-probs vs torch tuned, next to llama.cpp on the untouched base
  vs torch base (the floor: llama.cpp's own arithmetic, f16 KV cache, quantized activations);
- lora-gguf (f16): llama.cpp's shift with/without the adapter vs torch's shift (correlation, mean |Δ|),
  applied to the base GGUF itself (SmolLM2) or to an f32 GGUF of the tiny HF base.

Usage: python bench/export_check.py [--skip-smollm2]   (writes bench/results/export_check.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from export_fixtures import llama_logprobs, make_adapter_run, target_logprobs, torch_logprobs  # noqa: E402


def measure(name: str, policy_model: str, work: Path, *, r: int, alpha: float, scale: float) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from minirft import gguf_export
    from minirft.export import export, load_base, run_recipe

    run = make_adapter_run(work / "run", policy_model, r=r, alpha=alpha, scale=scale)
    base, tokenizer, gguf_file = load_base(run_recipe(run))
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about the moon in one sentence."}],
                                        add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    ids += tokenizer("The moon is Earth's only natural satellite, and it shapes our tides.")["input_ids"]
    tuned_full = torch_logprobs(model, ids)
    with model.disable_adapter():
        plain_full = torch_logprobs(model, ids)
    tuned, plain = target_logprobs(tuned_full, ids), target_logprobs(plain_full, ids)
    out: dict = {"model": name, "tokens": len(ids), "lora_r": r, "lora_alpha": alpha, "b_scale": scale,
                 "adapter_shift_mean_abs": float(np.abs(tuned - plain).mean())}

    export(run, "merged", work / "merged")
    merged = AutoModelForCausalLM.from_pretrained(work / "merged")
    out["merged_max_abs_logprob_diff_all_vocab"] = float(np.abs(torch_logprobs(merged, ids) - tuned_full).max())

    if gguf_file is None:  # an HF base: its GGUF is what llama.cpp's convert_hf_to_gguf.py would write
        btok = work / "tok"
        tokenizer.save_pretrained(btok)
        base_gguf = work / "base.f32.gguf"
        fresh, _, _ = load_base(run_recipe(run))  # `base` now carries peft's LoRA layers
        gguf_export.write_model_gguf(fresh, tokenizer, base_gguf, quant="f32", tokenizer_dir=btok)
    else:
        base_gguf = gguf_file
        out["base_gguf_precision"] = gguf_export.gguf_precision(gguf_file)
    floor = target_logprobs(llama_logprobs(base_gguf, ids), ids)
    out["llama_cpp_base_vs_torch_base_mean_abs"] = float(np.abs(floor - plain).mean())
    for quant in ("q8_0", "f16"):
        path = work / f"merged.{quant}.gguf"
        export(run, "gguf", path, quant=quant)
        g = target_logprobs(llama_logprobs(path, ids), ids)
        out[f"gguf_{quant}_vs_torch_tuned_mean_abs"] = float(np.abs(g - tuned).mean())
        out[f"gguf_{quant}_vs_torch_base_mean_abs"] = float(np.abs(g - plain).mean())
        out[f"gguf_{quant}_mb"] = round(path.stat().st_size / 1e6, 1)
    lora = work / "lora.f16.gguf"
    export(run, "lora-gguf", lora, quant="f16")
    shifted = target_logprobs(llama_logprobs(base_gguf, ids, lora=lora), ids)
    l_shift, t_shift = shifted - floor, tuned - plain
    out["lora_gguf_f16_shift_corr"] = float(np.corrcoef(l_shift, t_shift)[0, 1])
    out["lora_gguf_f16_shift_mean_abs_diff"] = float(np.abs(l_shift - t_shift).mean())
    out["lora_gguf_f16_vs_torch_tuned_mean_abs"] = float(np.abs(shifted - tuned).mean())
    out["lora_gguf_mb"] = round(lora.stat().st_size / 1e6, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export_check.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from train_fixtures import make_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        make_tiny_model(Path(tmp) / "tiny")
        rows.append(measure("tiny random llama (hidden 32)", str(Path(tmp) / "tiny"), Path(tmp) / "w1",
                            r=4, alpha=8, scale=0.2))
        if not args.skip_smollm2:
            rows.append(measure("smollm2-135m-instruct", "smollm2-135m-instruct", Path(tmp) / "w2",
                                r=8, alpha=16, scale=0.03))
    keys = [k for k in rows[0] if k != "model"]
    print(f"{'measure':<44}" + "".join(f"{r['model'][:26]:>28}" for r in rows))
    for k in keys + [k for k in rows[-1] if k not in keys and k != "model"]:
        cells = []
        for r in rows:
            v = r.get(k, "")
            cells.append(f"{v:>28.4g}" if isinstance(v, float) else f"{str(v):>28}")
        print(f"{k:<44}" + "".join(cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1),
                                    "load_avg_1m": os.getloadavg()[0], "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
