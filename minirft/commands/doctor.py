"""`minirft doctor`: what this machine can do, without loading any model."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform

import click


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# Low-level llama.cpp calls the batched, prefix-sharing judge needs (0.3.x names).
LLAMA_BATCH_API = ("llama_batch_init", "llama_decode", "llama_get_logits_ith", "llama_get_memory",
                   "llama_memory_seq_cp", "llama_memory_seq_rm")


def llama_cpp_status() -> dict:
    version = _version("llama_cpp_python")
    if version is None:
        return {"installed": False}
    try:
        import llama_cpp
    except Exception as exc:  # a broken native build shows here, not as a crash later
        return {"installed": True, "version": version, "import_error": str(exc).splitlines()[0]}
    from minirft.llamacpp import cpu_features

    missing = [name for name in LLAMA_BATCH_API if not hasattr(llama_cpp, name)]
    gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
    return {"installed": True, "version": version, "batched_api": not missing, "missing": missing,
            "gpu_offload": gpu, "cpu_features": cpu_features()}


def torch_status() -> dict:
    version = _version("torch")
    if version is None:
        return {"installed": False}
    import torch

    cuda = torch.cuda.is_available()
    out = {"installed": True, "version": torch.__version__, "cuda": cuda}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return out


def unsloth_status(cuda: bool) -> dict:
    version = _version("unsloth")
    # Importing unsloth without a GPU raises; never try it on CPU.
    usable = bool(version) and cuda
    why = None if usable else ("not installed (pip install -e .[gpu])" if not version else "needs a CUDA GPU")
    return {"installed": bool(version), "version": version, "usable": usable, "why": why}


def collect() -> dict:
    import psutil

    from minirft import __version__
    from minirft.models import installed_models

    torch_info = torch_status()
    mem = psutil.virtual_memory()
    return {
        "minirft": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": psutil.cpu_count(logical=True),
        "memory_free_gb": round(mem.available / 2**30, 1),
        "memory_total_gb": round(mem.total / 2**30, 1),
        "torch": torch_info,
        "unsloth": unsloth_status(bool(torch_info.get("cuda"))),
        "bitsandbytes": _version("bitsandbytes"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "triton": _version("triton"),
        "trl": _version("trl"),
        "textual": _version("textual"),
        "llama_cpp": llama_cpp_status(),
        "models": installed_models(),
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render(info: dict) -> list[str]:
    t, u, lc = info["torch"], info["unsloth"], info["llama_cpp"]
    lines = [
        f"minirft           {info['minirft']}",
        f"python            {info['python']} ({info['platform']}, {info['cpus']} CPUs)",
        f"memory            {info['memory_free_gb']} GiB free of {info['memory_total_gb']} GiB",
        f"torch             {t.get('version', 'not installed')}",
        f"CUDA              {_yes(bool(t.get('cuda')))}" + (f" — {t['gpu']}" if t.get("gpu") else ""),
        f"unsloth usable    {_yes(u['usable'])}" + (f" ({u['why']})" if u["why"] else f" ({u['version']})"),
        f"bitsandbytes      {info['bitsandbytes'] or 'not installed'}",
        f"transformers      {info['transformers'] or 'not installed'}   peft {info['peft'] or 'not installed'}",
        f"triton            {info['triton'] or 'not installed'}",
        f"trl               {info['trl'] or 'not installed'}" + (" (--engine trl)" if info["trl"] else
                                                                 " (--engine trl needs: pip install 'minirft[trl]')"),
    ]
    if not lc.get("installed"):
        lines.append("llama-cpp-python  not installed")
    elif "import_error" in lc:
        lines.append(f"llama-cpp-python  {lc['version']} — import fails: {lc['import_error']}")
    else:
        api = "yes" if lc["batched_api"] else f"no (missing {', '.join(lc['missing'])})"
        lines.append(f"llama-cpp-python  {lc['version']} — batched low-level API: {api}; "
                     f"GPU offload: {_yes(lc['gpu_offload'])}")
        if lc.get("cpu_features"):
            lines.append(f"  built for       {' '.join(lc['cpu_features'])}")
    lines.append("models:")
    for m in info["models"]:
        if m["path"]:
            state = f"{m['size_mb']} MB  {m['path']}"
        elif m["installed"]:
            state = "installed (assembled on first use)"
        else:
            state = f"missing — {m['install']}"
        lines.append(f"  {m['name']:<22} {state}")
    return lines


def footprint(recipe_arg: str, overrides: list[str]) -> dict:
    """The recipe's estimated GPU footprint (``minirft.cuda_memory.estimate``), without loading weights."""
    from minirft.cuda_memory import estimate
    from minirft.recipe import find_recipe, load_recipe

    recipe = load_recipe(find_recipe(recipe_arg), overrides)
    fp = estimate(recipe, cuda=True)
    return {"recipe": recipe.name, "parts_gb": {k: round(v, 3) for k, v in fp.parts.items()},
            "total_gb": round(fp.total, 2), "notes": fp.notes, "lines": fp.lines(),
            "cap_gb": recipe.training.gpu_memory_gb}


@click.command("doctor", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_command(recipe: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Report Python, torch/CUDA, unsloth, bitsandbytes, llama-cpp-python, triton, models, memory;
    with a RECIPE, also its estimated GPU footprint (weights, LoRA + optimizer, rollout KV cache,
    activations, judge) from the models' config.json, without loading any weights.

    \b
    Examples:
      minirft doctor
      minirft doctor --json | jq .llama_cpp
      minirft doctor recipes/polite.yaml policy.model=/models/llama-8b training.prompts_per_step=4
    """
    info = collect()
    if recipe is not None:
        info["footprint"] = footprint(recipe, list(overrides))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    lines = render(info)
    if recipe is not None:
        fp = info["footprint"]
        lines.append(f"GPU footprint of {fp['recipe']} on CUDA (estimate):")
        lines += fp["lines"]
        if fp["cap_gb"] is not None:
            verdict = "fits" if fp["total_gb"] <= fp["cap_gb"] else "does NOT fit"
            lines.append(f"  {verdict} training.gpu_memory_gb={fp['cap_gb']:g}")
    click.echo("\n".join(lines))
