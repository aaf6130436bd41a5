"""Third-party noise, hidden in one place: a user sees minirft's own lines unless they ask for ``-v``.

Called once by the ``minirft`` command before any third-party package is imported (so the filters
are in place when their import-time messages fire), and inherited by child processes (``train --tui``)
through the environment. What it hides, and why each is noise rather than news:

- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community … pip install kernels"
  (logged at import on AVX512-BF16 CPUs; minirft never runs a 4-bit CPU kernel);
- transformers' ``is_gradient_checkpointing`` FutureWarning (peft reads the deprecated alias);
- peft's "Could not find a config file in … will assume that the vocabulary was not modified"
  (a GGUF base has no config.json; minirft never resizes the vocabulary);
- tqdm progress bars, such as transformers' "Converting and de-quantizing GGUF tensors" per load,
  and transformers' and Hugging Face Hub's info/warning logs;
- torch's "lr_scheduler.step() before optimizer.step()" after a deliberately skipped step, and
  transformers' ``past_key_values`` FutureWarning (the torch judge backend).

``-v`` (or ``MINIRFT_VERBOSE=1``) leaves all of them as their packages print them.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "MINIRFT_VERBOSE"

# (category, regex matched against the start of the message)
WARNINGS = (
    (FutureWarning, r".*is_gradient_checkpointing"),
    (UserWarning, r"Could not find a config file in"),
    # A step skipped on purpose (non-finite loss, or no sample with a reward) still advances the LR
    # schedule, so the schedule keeps its place; torch warns about that order once per process.
    (UserWarning, r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"),
    # transformers 5.2x: the torch judge backend's prefix-cache argument is to be renamed.
    (FutureWarning, r".*`past_key_values` is deprecated"),
)
LOGGERS = ("bitsandbytes", "transformers", "peft", "accelerate", "huggingface_hub")
# Environment switches the packages read (also in child processes); a value the user set wins.
ENV = {
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_<ARG> for every bar's defaults
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_third_party(verbose: bool = False) -> bool:
    """Hide the noise above unless ``verbose`` (or ``MINIRFT_VERBOSE``); returns whether it hid it."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # children (train --tui) stay verbose too
        return False
    if verbose_requested():
        return False
    for category, message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    return True
