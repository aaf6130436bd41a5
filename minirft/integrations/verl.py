"""veRL reward functions that call ``minirft judge serve`` (POST /score), for veRL's custom reward hook.

veRL calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` per sample (its
default ``naive`` reward manager) or ``compute_score_batch(data_sources, solution_strs, ground_truths,
extra_infos)`` once per batch (``reward_model.reward_manager=batch``)::

    export MINIRFT_JUDGE_TOKEN=$(openssl rand -hex 16)   # the service and its clients share it
    minirft judge serve recipes/polite.yaml --host 0.0.0.0 --port 8700 &
    MINIRFT_JUDGE_URL=http://judge-host:8700 python -m verl.trainer.main_ppo ... \\
        reward_model.reward_manager=batch \\
        custom_reward_function.path=$(python -c 'import minirft.integrations.verl as m; print(m.__file__)') \\
        custom_reward_function.name=compute_score_batch

The prompt is read from ``extra_info["prompt"]`` (or ``"question"``), so put it there in the dataset's
``extra_info`` column; ``ground_truth`` becomes the row's ``reference``. Each score is a dict:
``{"score": reward, "criteria/<name>": P(pass), ...}`` (veRL logs the extra keys). A failed judgement
scores 0.0 with ``judge_error: 1``. Standard library only: nothing of minirft's is imported here.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any, Sequence

URL_ENV = "MINIRFT_JUDGE_URL"
TOKEN_ENV = "MINIRFT_JUDGE_TOKEN"  # sent as a bearer token when set
DEFAULT_URL = "http://127.0.0.1:8700"


def _prompt(extra_info: Any) -> str:
    if isinstance(extra_info, dict):
        for key in ("prompt", "question", "query"):
            value = extra_info.get(key)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, list) and value and isinstance(value[-1], dict):
                return str(value[-1].get("content", ""))
    return "(no prompt given)"


def _row(solution: str, ground_truth: Any, extra_info: Any) -> dict:
    row: dict = {"prompt": _prompt(extra_info), "response": solution}
    if ground_truth not in (None, ""):
        row["reference"] = ground_truth if isinstance(ground_truth, (str, int, float)) else json.dumps(ground_truth)
    return row


def score_rows(rows: list[dict], url: str | None = None, timeout: float = 600.0) -> list[dict]:
    base = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:  # the service was started with --token / MINIRFT_JUDGE_TOKEN
        headers["Authorization"] = f"Bearer {token.strip()}"
    req = urllib.request.Request(base + "/score", data=json.dumps({"rows": rows}).encode("utf-8"), headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        results = json.loads(resp.read().decode("utf-8"))["results"]
    out = []
    for r in results:
        d: dict = {"score": 0.0 if r.get("reward") is None else float(r["reward"]),
                   "judge_error": int(r.get("reward") is None)}
        d.update({f"criteria/{k}": float(v) for k, v in (r.get("criteria") or {}).items()})
        out.append(d)
    return out


def compute_score_batch(data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Any], **_: Any) -> list[dict]:
    rows = [_row(s, g, e) for s, g, e in zip(solution_strs, ground_truths, extra_infos)]
    return score_rows(rows)


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any) -> dict:
    return score_rows([_row(solution_str, ground_truth, extra_info)])[0]
