"""The http backend: any OpenAI-compatible completion server (llama.cpp's server, vLLM, llama-cpp-python's).

This is the path for a judge that outgrows the trainer's GPU. One ``/completions`` request per
query with ``max_tokens: 1`` and ``logprobs: K``; the label probabilities are read from the
top-K log-probabilities at the verdict position (label variants are matched by their text, since
the server's token ids are unknown here) and renormalised over the labels, exactly as the
in-process backend does. A label missing from the top K counts as probability 0; when no label is
in the top K the query fails (and is retried, then reported as an error score). Requests run
concurrently so a server with several slots (or vLLM's continuous batching) batches them; its own
prefix cache plays the role of the in-process shared-prefix KV copy.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from minirft.errors import MinirftError
from minirft.judge import scoring
from minirft.judge.base import Evaluation, Query
from minirft.recipe import HttpJudgeConfig


class HttpEvaluator:
    top_logprobs = 20  # what vLLM allows by default; a server may allow more
    workers = 8

    def __init__(self, cfg: HttpJudgeConfig, model_name: str) -> None:
        self.cfg = cfg
        self.model = cfg.model or model_name
        self.url = cfg.url.rstrip("/") + "/completions"
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise MinirftError(f"judge.http.api_key_env: environment variable {cfg.api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        self._pool = ThreadPoolExecutor(self.workers)

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")[:200]
            raise RuntimeError(f"judge server {self.url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise RuntimeError(f"judge server {self.url}: {exc}") from None

    def _one(self, q: Query, classes: Sequence[tuple[str, ...]]) -> Evaluation:
        prompt = "".join(q.segments)
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                "logprobs": self.top_logprobs}
        top = top_logprobs(self._post(body))
        probs = scoring.class_probs([[top.get(f, -math.inf) for f in forms] for forms in classes])
        text = ""
        if q.generate:
            out = self._post({"model": self.model, "prompt": prompt, "max_tokens": q.generate,
                              "temperature": 0.0, "stop": list(q.stop) or None})
            text = out["choices"][0].get("text", "").strip()
        return Evaluation(probs, text)

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        try:
            return list(self._pool.map(lambda q: self._one(q, classes), queries))
        except ValueError as exc:  # no label in the top-K
            raise RuntimeError(f"judge server {self.url}: {exc} in the top {self.top_logprobs} logprobs") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def top_logprobs(response: dict) -> dict[str, float]:
    """{token text: logprob} at the first generated position, from either response shape.

    Legacy completions (llama-cpp-python, vLLM): ``logprobs.top_logprobs[0]`` is a dict.
    llama.cpp's server: ``logprobs.content[0].top_logprobs`` is a list of ``{token, logprob}``.
    """
    try:
        lp = response["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"judge server response has no logprobs: {str(response)[:200]}") from None
    if lp is None:
        raise RuntimeError("judge server returned no logprobs (does it support `logprobs` on /completions?)")
    if lp.get("top_logprobs"):
        first = lp["top_logprobs"][0] or {}
        return {k: float(v) for k, v in first.items()}
    if lp.get("content"):
        return {d["token"]: float(d["logprob"]) for d in lp["content"][0].get("top_logprobs", [])}
    raise RuntimeError(f"judge server logprobs in an unknown shape: {str(lp)[:200]}")
