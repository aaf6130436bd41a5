#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) on a bare CUDA machine that has torch, transformers, peft and triton
# (e.g. this workplace's H200 image) but not minirft's other packages:
#   1. once, on a machine with minirft installed (network for the wheels): python bench/gpu_check.py
#      --save-tokenizer .gpu/tokenizer, and the Python 3.12 wheels of pydantic, gguf, bitsandbytes, trl,
#      datasets, unsloth ... into .gpu/whl (bench/gpu_check_wheels.sh);
#   2. on the GPU machine, from the repo root: bash bench/gpu_check.sh [gpu_check.py options]
# Installs .gpu/whl/*.whl and minirft itself into $SITE (no index, no dependencies), then runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/minirft-site}
WHEELS=${WHEELS:-.gpu/whl}
PY=${PYTHON:-python3}
t0=$SECONDS
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" .
echo "[gpu_check.sh] installed into $SITE in $((SECONDS - t0))s" >&2
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
TOK=()
if [ -d .gpu/tokenizer ]; then TOK=(--tokenizer .gpu/tokenizer); fi
exec "$PY" bench/gpu_check.py "${TOK[@]}" "$@"
