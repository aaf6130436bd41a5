#!/usr/bin/env bash
# Python 3.12 wheels of what bench/gpu_check.sh needs beside torch/transformers/peft/triton, into .gpu/whl
# (about 28 MB: bitsandbytes keeps only its CUDA 13.0 library, unsloth drops studio/ and unsloth_cli/).
# Unsloth 2026.10.9 pins trl <= 1.15.0 and datasets < 5.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d .gpu/whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions gguf \
  bitsandbytes==0.50.2 trl==1.15.0 datasets==4.8.5 dill multiprocess textual textual-plotext plotext \
  platformdirs mdit-py-plugins linkify-it-py uc-micro-py unsloth==2026.10.9 unsloth_zoo==2026.10.9 tyro \
  docstring-parser json5 structlog nest-asyncio hf_transfer typeguard torchao cut_cross_entropy msgspec
python3 - <<'PY'
import glob, os, zipfile
def strip(src, drop):
    tmp = src + ".tmp"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zo:
        for it in zi.infolist():
            if not drop(it.filename):
                zo.writestr(it, zi.read(it.filename))
    os.replace(tmp, src)
strip(glob.glob(".gpu/whl/bitsandbytes-*.whl")[0], lambda n: "libbitsandbytes_cuda" in n and "cuda130" not in n)
strip(glob.glob(".gpu/whl/unsloth-2026*.whl")[0], lambda n: n.startswith(("studio/", "unsloth_cli/")))
PY
du -sh .gpu/whl
