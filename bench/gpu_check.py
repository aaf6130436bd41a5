"""The GPU check: minirft on one CUDA GPU, every row docs/gpu.md quotes, in one command.

    bench/gpu_check.sh                           # on a bare CUDA machine (installs wheels from .gpu/whl)
    python bench/gpu_check.py --tokenizer DIR    # torch/transformers/peft/triton + minirft importable
    python bench/gpu_check.py --smoke            # CPU, tiny shapes, one step each (tests/test_gpu_check.py)

Random-weight models of real shapes (every completion runs to max_new_tokens, so the work per step is
known) with a real tokenizer (``--tokenizer``: a Hugging Face tokenizer folder; default: the embedded
SmolLM2's), saved once under ``--workdir`` (/dev/shm by default). Then, each part in its own child
process under its own timeout — one failure or hang never stops the rest — in this order, parts that
would not fit in what is left of ``--budget`` seconds skipped and said so:

- ``gen_small`` / ``gen_8b``: generation alone on the loaded policy, HF ``generate`` against the
  ``torch_graph`` engine (static KV cache + one CUDA graph per decode step), tokens per second;
  the 8B policy as the trainer holds it (bitsandbytes nf4 + LoRA);
- ``train_8b``: ``minirft train recipes/polite.yaml`` with an 8B Llama-3-shape nf4 QLoRA policy and a
  3B-shape torch judge in one process, G8 × 512 tokens × 4 prompts, ``generation.engine: auto``, no
  allocator setting of the user's: steady step time, its parts, peak GPU memory of the process
  (nvidia-smi, polled) and torch's allocated/reserved peaks;
- ``train_small``: the SmolLM2-135M-shape row (hf bf16, 1.5B-shape judge, G4 × 128), ``auto``;
- ``trl_small``: the same small row through ``--engine trl`` (TRL's GRPOTrainer, the same judge as its
  reward function);
- ``train_small_torch``: the small row with HF ``generate`` (``generation.engine: torch``);
- ``kernels``: ``bench/kernels_bench.py --device cuda``;
- ``unsloth_small``: the small row with ``policy.backend: unsloth`` (its own fast generation);
- ``llama_cpp_judge``: the 3B judge as a GGUF in llama.cpp with every layer on the GPU (when
  llama-cpp-python is built with CUDA).

Writes ``bench/results/gpu_check_<gpu>.json`` after every part (and a copy under ``$OUT`` when set)
and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings)
SHAPES = {
    "smollm2-135m": (576, 30, 9, 3, 1536, 49152, True),
    "judge-1.5b": (1536, 28, 12, 2, 8960, 151936, True),
    "llama3-8b": (4096, 32, 32, 8, 14336, 128256, False),
    "judge-3b": (3072, 28, 24, 8, 8192, 128256, True),
}
SMOKE_SHAPE = (64, 2, 4, 2, 128, None, True)  # vocab: the tokenizer's

# part -> (estimated seconds, at most seconds): a part runs only when its estimate fits what is left
PARTS = {
    "gen_small": (40, 150),
    "gen_8b": (110, 260),
    "train_8b": (150, 330),
    "train_small": (45, 150),
    "trl_small": (70, 180),
    "train_small_torch": (50, 150),
    "kernels": (80, 200),
    "llama_cpp_judge": (90, 200),
    "unsloth_small": (200, 330),
}
SMOKE_PARTS = ["gen_small", "train_small", "train_small_torch"]


# ------------------------------------------------------------------------------------ models
def build_models(workdir: Path, tokenizer_dir: Path, smoke: bool, names: list[str]) -> dict[str, str]:
    """Random-weight models (bf16 on CUDA, fp32 on the CPU) with the tokenizer, saved under ``workdir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    device = "cpu" if smoke else "cuda"
    dtype = torch.float32 if smoke else torch.bfloat16
    out = {}
    for name in names:
        path = workdir / name
        out[name] = str(path)
        if (path / "config.json").is_file():
            continue
        hidden, layers, heads, kv, inter, vocab, tied = SMOKE_SHAPE if smoke else SHAPES[name]
        vocab = max(vocab or 0, len(tok))
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
                          tie_word_embeddings=tied, max_position_embeddings=4096, rope_theta=500000.0,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(cfg).to(dtype)
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        tmp.rename(path)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def save_tokenizer(out: Path) -> Path:
    """The embedded SmolLM2-135M-Instruct's tokenizer as a Hugging Face folder (to carry to a GPU machine)."""
    from transformers import AutoTokenizer

    from minirft.models import resolve_model

    model = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(str(model.path.parent), gguf_file=model.path.name)
    tok.save_pretrained(str(out))
    return out


# ------------------------------------------------------------------------------ generation A/B
def gen_ab(policy_path: str, *, seqs: int, tokens: list[int], four_bit: bool, smoke: bool) -> dict:
    """HF generate against torch_graph on the same loaded policy (LoRA attached, as the trainer holds it)."""
    import torch

    from minirft.recipe import validate_recipe
    from minirft.train.graph_rollout import GraphGenerator
    from minirft.train.policy import generate, load_policy

    recipe = validate_recipe({
        "name": "gpu-check", "rewards": [{"type": "length"}], "data": {"path": "unused.jsonl"},
        "policy": {"model": policy_path, "backend": "hf", "load_in_4bit": four_bit,
                   "gradient_checkpointing": four_bit},
        "generation": {"engine": "torch_graph", "max_new_tokens": max(tokens), "group_size": 2},
    })
    cuda = torch.cuda.is_available() and not smoke
    t0 = time.perf_counter()
    policy = load_policy(recipe.policy, device="cuda" if cuda else "cpu")
    load_s = time.perf_counter() - t0
    with torch.no_grad():  # a trained adapter: B != 0, so the LoRA path computes something
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    text = "Write a short, polite reply to a customer who asks when their order will arrive."
    prompt = policy.tokenizer(text)["input_ids"]
    prompts = [prompt[: 24 + (i % 8) * 4] for i in range(seqs)]  # prompts of different lengths (left padding)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn) -> tuple[float, int]:
        sync()
        t = time.perf_counter()
        gen = fn()
        sync()
        return time.perf_counter() - t, int(gen.completion_mask.sum())

    engine = GraphGenerator(recipe, policy, use_graph=cuda)
    rows = {}
    for n in tokens:
        hf = lambda: generate(policy, prompts, max_new_tokens=n, temperature=1.0)  # noqa: E731
        graph = lambda: engine.sample(policy, prompts, max_new_tokens=n, temperature=1.0)  # noqa: E731
        timed(graph)  # warm-up (and the graph capture for this shape)
        if n == min(tokens):
            timed(lambda: generate(policy, prompts, max_new_tokens=4, temperature=1.0))  # warm-up
        runs_hf = [timed(hf) for _ in range(1 if n > 128 and not smoke else 2)] if n == min(tokens) else []
        runs_graph = [timed(graph) for _ in range(1 if n > 128 and not smoke else 2)]
        row = {"seqs": seqs, "new_tokens": n,
               "graph_s": min(s for s, _ in runs_graph),
               "graph_tok_s": max(k / s for s, k in runs_graph)}
        if runs_hf:
            row["hf_generate_s"] = min(s for s, _ in runs_hf)
            row["hf_generate_tok_s"] = max(k / s for s, k in runs_hf)
            row["speedup"] = row["graph_tok_s"] / row["hf_generate_tok_s"]
        rows[str(n)] = row
    greedy_hf = generate(policy, prompts[:4], max_new_tokens=16, temperature=None)
    greedy_graph = engine.sample(policy, prompts[:4], max_new_tokens=16, temperature=None)
    same = (greedy_hf.input_ids == greedy_graph.input_ids).float().mean().item()
    out = {"load_s": load_s, "rows": rows, "graph_used": engine.graph_captures > 0,
           "graph_error": engine.graph_error, "greedy_token_agreement_16": same}
    if cuda:
        out["torch_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["torch_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return out


# ----------------------------------------------------------------------------------- training
class GpuMemoryPoll:
    """The peak of nvidia-smi's used memory (the whole GPU: only this check runs there) while a child runs."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.peak_mb = max(self.peak_mb, max(float(x) for x in out.split()))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> "GpuMemoryPoll":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=10)


def train_row(models: dict[str, str], workdir: Path, *, policy: str, judge: str, G: int, tokens: int,
              steps: int, overrides: list[str], engine: str = "minirft", timeout: float) -> dict:
    """``minirft train recipes/polite.yaml`` as a user runs it (a child process, the user's environment
    without PYTORCH_CUDA_ALLOC_CONF), its steps read back from events.jsonl."""
    from minirft.events import read_events

    run_dir = workdir / "runs" / f"{policy}-{engine}-{int(time.time() * 1000)}"
    args = [sys.executable, "-m", "minirft.cli", "train", str(ROOT / "recipes" / "polite.yaml"),
            f"policy.model={models[policy]}", "policy.backend=hf", "judge.backend=torch",
            f"judge.model={models[judge]}", f"generation.group_size={G}", f"generation.max_new_tokens={tokens}",
            "training.prompts_per_step=4", "training.micro_batch_prompts=1", f"training.steps={steps}",
            "checkpoint.every=1000", "logging.samples_per_step=2", *overrides,
            "--run-dir", str(run_dir)]
    if engine == "trl":
        args.append("--engine=trl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
    t0 = time.perf_counter()
    with GpuMemoryPoll() as poll:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    out: dict = {"command": " ".join(args[2:]), "exit": proc.returncode, "wall_s": wall,
                 "gpu_used_peak_gb": poll.peak_mb / 1024 if poll.available else None}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-1500:]
    events = read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").is_file() else []
    steps_m = [e["metrics"] for e in events if e.get("type") == "step"]
    start = next((e for e in events if e.get("type") == "run_start"), {})
    out["generation_engine"] = start.get("generation_engine", start.get("engine"))
    out["steps"] = [{k: m.get(k) for k in ("step_s", "generation_s", "judge_s", "update_s", "tokens_per_s",
                                           "completion_length", "gpu_peak_gb", "gpu_reserved_peak_gb",
                                           "generation/graph_captures")} for m in steps_m]
    out["warnings"] = [e.get("message") for e in events if e.get("type") == "event" and e.get("kind") == "warning"]
    steady = out["steps"][1:] or out["steps"]
    if steady:
        for key in ("step_s", "generation_s", "judge_s", "update_s", "tokens_per_s"):
            vals = [s[key] for s in steady if s.get(key) is not None]
            if vals:
                out[f"steady_{key}"] = sum(vals) / len(vals)
    return out


# ------------------------------------------------------------------------------------- parts
def run_part(name: str, models: dict[str, str], workdir: Path, smoke: bool, timeout: float) -> dict:
    steps = 1 if smoke else 3
    small_tokens = 8 if smoke else 128
    if name == "gen_small":
        return gen_ab(models["smollm2-135m"], seqs=4 if smoke else 16, tokens=[small_tokens],
                      four_bit=False, smoke=smoke)
    if name == "gen_8b":
        return gen_ab(models["llama3-8b"], seqs=32, tokens=[64, 512], four_bit=True, smoke=smoke)
    small = dict(policy="smollm2-135m", judge="judge-1.5b", G=2 if smoke else 4, tokens=small_tokens, steps=steps,
                 timeout=timeout)
    cpu = ["policy.load_in_4bit=false"] + (["training.optimizer=adamw", "judge.device=cpu"] if smoke else [])
    if name == "train_small":  # auto: torch_graph on CUDA (asked for by name on the CPU, where auto is torch)
        return train_row(models, workdir, overrides=cpu + (["generation.engine=torch_graph"] if smoke else []),
                         **small)
    if name == "train_small_torch":
        return train_row(models, workdir, overrides=cpu + ["generation.engine=torch"], **small)
    if name == "trl_small":
        return train_row(models, workdir, overrides=["generation.engine=torch"], engine="trl",
                         **{**small, "steps": 2})
    if name == "unsloth_small":
        return train_row(models, workdir, overrides=["policy.backend=unsloth", "generation.engine=torch"],
                         **{**small, "steps": 2})
    if name == "train_8b":
        return train_row(models, workdir, policy="llama3-8b", judge="judge-3b", G=8, tokens=512, steps=steps,
                         overrides=["policy.gradient_checkpointing=true", "policy.max_prompt_tokens=256"],
                         timeout=timeout)
    if name == "kernels":
        out_dir = workdir / "kernels"
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernels_bench.py"), "--device", "cuda",
                               "--out", str(out_dir)], capture_output=True, text=True, timeout=timeout)
        result = {"exit": proc.returncode}
        if proc.returncode:
            result["stderr_tail"] = proc.stderr[-1500:]
        if (out_dir / "kernels_cuda.json").is_file():
            result["results"] = json.loads((out_dir / "kernels_cuda.json").read_text())
        return result
    if name == "llama_cpp_judge":
        return llama_cpp_judge(models, workdir)
    raise SystemExit(f"unknown part {name}")


def llama_cpp_judge(models: dict[str, str], workdir: Path) -> dict:
    """The 3B-shape judge as a bf16 GGUF, scored by llama.cpp with every layer on the GPU."""
    try:
        import llama_cpp
    except ImportError as exc:
        return {"skipped": f"llama-cpp-python is not installed ({exc})"}
    if not llama_cpp.llama_supports_gpu_offload():
        return {"skipped": "llama-cpp-python is built without GPU offload"}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minirft import gguf_export
    from minirft.judge import build_judge
    from minirft.recipe import load_recipe
    from minirft.data import PromptRow

    gguf = workdir / "judge-3b.bf16.gguf"
    t0 = time.perf_counter()
    if not gguf.is_file():
        model = AutoModelForCausalLM.from_pretrained(models["judge-3b"], dtype="bfloat16")
        gguf_export.write_model_gguf(model, AutoTokenizer.from_pretrained(models["judge-3b"]), gguf, quant="bf16",
                                     tokenizer_dir=Path(models["judge-3b"]))
    export_s = time.perf_counter() - t0
    recipe = load_recipe(ROOT / "recipes" / "polite.yaml",
                         [f"judge.model={gguf}", "judge.backend=llama_cpp", "judge.n_gpu_layers=-1"])
    judge = build_judge(recipe.judge)
    judge.load()
    rows = [PromptRow(prompt=f"Question {i}: where is my parcel?", messages=({"role": "user", "content": "q"},))
            for i in range(4)]
    groups = [[f"Answer {i}.{k}: it ships tomorrow, thank you for waiting." * 8 for k in range(8)] for i in range(4)]
    judge.score_groups(rows, groups, False)
    t0 = time.perf_counter()
    judge.score_groups(rows, groups, False)
    score_s = time.perf_counter() - t0
    judge.close()
    return {"export_s": export_s, "judge_s_4x8": score_s}


# ----------------------------------------------------------------------------------- report
def gpu_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).lower().replace("nvidia ", "").replace(" ", "-")
    return "cpu"


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "transformers", "peft", "triton", "bitsandbytes", "trl", "unsloth", "llama-cpp-python"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def table(results: dict) -> str:
    lines = [f"{'part':<18} {'status':<8} summary"]
    for name, r in results["parts"].items():
        if "skipped" in r:
            lines.append(f"{name:<18} {'skipped':<8} {r['skipped']}")
            continue
        status = "ok" if not r.get("error") and r.get("exit", 0) == 0 else "FAILED"
        bits = []
        for n, row in (r.get("rows") or {}).items():
            s = f"{n} tok: graph {row['graph_tok_s']:.0f} tok/s"
            if "speedup" in row:
                s += f" vs generate {row['hf_generate_tok_s']:.0f} ({row['speedup']:.1f}x)"
            bits.append(s)
        for key, unit in (("steady_step_s", "step"), ("steady_generation_s", "gen"), ("steady_judge_s", "judge"),
                          ("steady_update_s", "update")):
            if r.get(key) is not None:
                bits.append(f"{unit} {r[key]:.1f}s")
        if r.get("gpu_used_peak_gb") is not None:
            bits.append(f"GPU {r['gpu_used_peak_gb']:.1f} GB used")
        if r.get("generation_engine"):
            bits.append(f"engine {r['generation_engine']}")
        if r.get("error"):
            bits.append(r["error"][:120])
        if r.get("stderr_tail"):
            bits.append(r["stderr_tail"].strip().splitlines()[-1][:120])
        lines.append(f"{name:<18} {status:<8} " + "; ".join(bits))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- docs
DOCS = ROOT / "docs" / "gpu.md"
BEGIN, END = "<!-- gpu_check tables: bench/gpu_check.py --render-docs -->", "<!-- end gpu_check tables -->"


def render_markdown(files: list[Path]) -> str:
    """The GPU tables of docs/gpu.md from the check's JSON files (every figure from a file, none typed)."""
    gen, train = [], []
    for path in files:
        r = json.loads(path.read_text())
        src = f"`{path.relative_to(ROOT)}` ({r['date']}, {r['gpu']})"
        for part, label in (("gen_small", "SmolLM2-135M shape, bf16 + LoRA"),
                            ("gen_8b", "Llama-3-8B shape, nf4 + LoRA (as trained)")):
            p = r["parts"].get(part, {})
            for n, row in (p.get("rows") or {}).items():
                hf = (f"{row['hf_generate_tok_s']:.0f} tok/s" if "hf_generate_tok_s" in row else "—")
                ratio = f"{row['speedup']:.1f}×" if "speedup" in row else "—"
                gen.append(f"| {label} | {row['seqs']} × {n} | {hf} | {row['graph_tok_s']:.0f} tok/s | {ratio} | "
                           f"{'yes' if p.get('graph_used') else 'no'} | {src} |")
        for part, label in (("train_8b", "8B nf4 QLoRA + 3B judge, G8 × 512 × 4 prompts"),
                            ("train_small", "135M bf16 + 1.5B judge, G4 × 128 × 4 prompts"),
                            ("train_small_torch", "135M bf16 + 1.5B judge, HF generate"),
                            ("trl_small", "135M bf16 + 1.5B judge, `--engine trl`")):
            p = r["parts"].get(part)
            if not p or p.get("exit") != 0:
                continue

            def f(key: str, unit: str = " s") -> str:
                return f"{p[key]:.1f}{unit}" if p.get(key) is not None else "—"

            steps = p.get("steps") or [{}]
            alloc = max((s.get("gpu_peak_gb") or 0) for s in steps)
            reserved = max((s.get("gpu_reserved_peak_gb") or 0) for s in steps)
            torch_mem = f"{alloc:.1f} / {reserved:.1f} GB" if alloc else "—"
            train.append(f"| {label} | {p.get('generation_engine')} | {f('steady_step_s')} | "
                         f"{f('steady_generation_s')} | {f('steady_judge_s')} | {f('steady_update_s')} | "
                         f"{torch_mem} | {f('gpu_used_peak_gb', ' GB')} | {src} |")
    out = ["Generation alone (random weights: every completion runs to its length):", "",
           "| policy | sequences × new tokens | HF generate | torch_graph | speedup | CUDA graph | source |",
           "|---|---|---|---|---|---|---|", *gen, "",
           "`minirft train recipes/polite.yaml` (steady steps: the mean after the first):", "",
           "| row | engine | step | generation | judge | update | torch allocated / reserved peak | GPU used peak "
           "(nvidia-smi) | source |", "|---|---|---|---|---|---|---|---|---|", *train]
    return "\n".join(out)


def render_docs(files: list[Path]) -> str:
    """docs/gpu.md with its tables block re-rendered."""
    text = DOCS.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_markdown(files)}\n{END}{tail}"


DOC_SOURCES = [ROOT / "bench" / "results" / "gpu_check_h200.json",
               ROOT / "bench" / "results" / "gpu_check_h200_decode_attention.json"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, one step per row (the test suite)")
    ap.add_argument("--parts", default=None, help="comma-separated parts (default: all, in order)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check")
    ap.add_argument("--tokenizer", type=Path, default=None, help="a Hugging Face tokenizer folder")
    ap.add_argument("--workdir", type=Path, default=None, help="models and runs (default /dev/shm/minirft-gpu)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/gpu_check_<gpu>.json)")
    ap.add_argument("--save-tokenizer", type=Path, default=None, help="write the embedded tokenizer and exit")
    ap.add_argument("--render-docs", action="store_true", help="rewrite docs/gpu.md's tables from the JSON files")
    ap.add_argument("--part", help=argparse.SUPPRESS)  # child: run one part, print its JSON
    ap.add_argument("--models", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.save_tokenizer:
        print(save_tokenizer(args.save_tokenizer))
        return
    if args.render_docs:
        DOCS.write_text(render_docs(DOC_SOURCES), encoding="utf-8")
        print(f"wrote {DOCS}")
        return
    workdir = args.workdir or (Path("/dev/shm/minirft-gpu") if Path("/dev/shm").is_dir() else Path("/tmp/minirft-gpu"))
    if args.part:  # a child
        models = json.loads(args.models)
        try:
            result = run_part(args.part, models, workdir, args.smoke, float(os.environ.get("GPU_CHECK_TIMEOUT", 600)))
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, the parent goes on
            import traceback

            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print("GPU_CHECK_RESULT " + json.dumps(result), flush=True)
        return

    t_start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer or save_tokenizer(workdir / "tokenizer")
    parts = args.parts.split(",") if args.parts else (SMOKE_PARTS if args.smoke else list(PARTS))
    needed = set()
    if any("small" in p for p in parts):
        needed |= {"smollm2-135m", "judge-1.5b"}
    if not args.smoke and any(p in parts for p in ("gen_8b", "train_8b")):
        needed.add("llama3-8b")
    if not args.smoke and any(p in parts for p in ("train_8b", "llama_cpp_judge")):
        needed.add("judge-3b")
    t0 = time.perf_counter()
    models = build_models(workdir, tokenizer, args.smoke, sorted(needed))
    name = "cpu-smoke" if args.smoke else gpu_name()
    out_path = args.out or ROOT / "bench" / "results" / f"gpu_check_{name}.json"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    results = {"date": time.strftime("%Y-%m-%d"), "gpu": name, "smoke": args.smoke, "commit": commit,
               "versions": versions(),
               "models": {k: list(SMOKE_SHAPE if args.smoke else SHAPES[k]) for k in models},
               "models_build_s": time.perf_counter() - t0, "parts": {}}

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        if os.environ.get("OUT"):
            shutil.copy(out_path, Path(os.environ["OUT"]) / out_path.name)

    save()
    for part in parts:
        left = args.budget - (time.perf_counter() - t_start)
        estimate, most = PARTS[part]
        if not args.smoke and left < estimate:
            results["parts"][part] = {"skipped": f"budget: {left:.0f}s left, needs ~{estimate}s"}
            save()
            continue
        timeout = max(30.0, min(most, left)) if not args.smoke else most
        print(f"[gpu_check {time.perf_counter() - t_start:5.0f}s] {part} (timeout {timeout:.0f}s)", flush=True)
        cmd = [sys.executable, __file__, "--part", part, "--models", json.dumps(models), "--workdir", str(workdir)]
        cmd += ["--smoke"] if args.smoke else []
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "GPU_CHECK_TIMEOUT": str(timeout - 10)})
            if os.environ.get("OUT"):  # the children's own output, for a look when a part fails
                with open(Path(os.environ["OUT"]) / "gpu_check_children.log", "a") as log:
                    log.write(f"===== {part} (exit {proc.returncode})\n{proc.stderr[-6000:]}\n")
            line = next((l for l in proc.stdout.splitlines() if l.startswith("GPU_CHECK_RESULT ")), None)
            result = json.loads(line.split(" ", 1)[1]) if line else {
                "error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {timeout:.0f}s"}
        result["part_s"] = time.perf_counter() - t0
        results["parts"][part] = result
        save()
    results["total_s"] = time.perf_counter() - t_start
    save()
    print(table(results))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
