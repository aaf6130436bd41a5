"""The http backend: any OpenAI-compatible server (vLLM, llama.cpp's server, llama-cpp-python's, hosted APIs).

This is the path for a judge that outgrows the trainer's GPU. Two APIs (``judge.http.api``):

- ``completions`` (legacy ``/completions``): the prompt is sent exactly as the layout wrote it, with
  ``max_tokens: 1, logprobs: K``;
- ``chat`` (``/chat/completions``): the layout is written in ChatML and split back into messages
  (system, user), the server applies the model's own chat template, and the request carries
  ``logprobs: true, top_logprobs: K`` (``judge.http.top_logprobs``).

Either way the label probabilities are read from the top-K log-probabilities at the first generated
position (label variants matched by their text, since the server's token ids are unknown here) and
renormalised over the labels, exactly as the in-process backends do. A label missing from the top K
counts as probability 0; when no label is in the top K the query fails (and is retried, then reported
as an error score).

Requests run concurrently, at most ``judge.http.max_concurrency`` at a time, so a server with several
slots (or vLLM's continuous batching) batches them; its own prefix cache plays the role of the
in-process shared-prefix KV copy. 429, 5xx and connection errors are retried ``max_retries`` times with
exponential backoff (``backoff_s``, doubled each time, or the server's ``Retry-After``). The API key is
read from the environment variable named by ``judge.http.api_key_env``; it never appears in a recipe,
a log or an error message. :meth:`HttpEvaluator.take_metrics` reports requests, retries, latency and
the servers' token counts (``usage``) since the last call: the trainer puts them in each step's metrics.

Contrast criteria (``method: contrast``) need the log-probability of every token of the response given
the text before it: :meth:`HttpEvaluator.score_tokens` asks ``/completions`` (whatever ``api`` says:
the contrast layout is plain text) for the prompt's own log-probabilities, the OpenAI way —
``echo: true, logprobs: 1, max_tokens: 1`` — which llama-cpp-python's server (its default
``--logits_all true``) and vLLM answer. The response's tokens are those at or after its character
offset in the prompt (``text_offset``; a token straddling the boundary counts as the response's), the
one generated token is dropped. The server tokenizes the whole prompt at once where the in-process
backends tokenize segment by segment, so a tokenizer that merges across a segment boundary gives
slightly different tokens. A server that refuses (llama-cpp-python with ``--logits_all false``) or
returns only the generated token's log-prob (llama.cpp's ``llama-server``) is a one-line error naming
the method.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from minirft.errors import MinirftError
from minirft.judge import scoring
from minirft.judge.base import Evaluation, EvaluatorBase, Query, TokenScores
from minirft.recipe import HttpJudgeConfig

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_WAIT_S = 30.0
_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n", re.DOTALL)


class _Refused(RuntimeError):
    """An HTTP error about log-probabilities or echo: the server cannot do it, retrying will not help."""


class _Retryable(RuntimeError):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def chatml_messages(prompt: str) -> list[dict]:
    """A ChatML prompt ending with the opened assistant turn, as chat messages (the open turn dropped)."""
    turns = [{"role": r, "content": c} for r, c in _TURN.findall(prompt)]
    rest = _TURN.sub("", prompt).replace("<|im_start|>assistant\n", "").strip()
    if not turns or rest:
        raise ValueError("the chat api needs a ChatML layout (judge.prompt_format: chatml or auto)")
    return turns


class HttpEvaluator(EvaluatorBase):
    def __init__(self, cfg: HttpJudgeConfig, model_name: str) -> None:
        self.cfg = cfg
        self.model = cfg.model or model_name
        self.top_logprobs = cfg.top_logprobs
        self.chat = cfg.api == "chat"
        base = cfg.url.rstrip("/")
        self.url = base + ("/chat/completions" if self.chat else "/completions")
        self.completions_url = base + "/completions"  # contrast criteria: prompt log-probs (echo)
        self.headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise MinirftError(f"judge.http.api_key_env: environment variable {cfg.api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        self._pool = ThreadPoolExecutor(cfg.max_concurrency)
        self._lock = threading.Lock()
        self._zero()

    # ------------------------------------------------------------------------------ metrics
    def _zero(self) -> None:
        self._m = {"requests": 0, "retries": 0, "failed": 0, "seconds": 0.0, "max_s": 0.0, "prompt_tokens": 0,
                   "completion_tokens": 0}

    def _note(self, seconds: float, usage: dict | None, retries: int, failed: bool = False) -> None:
        with self._lock:
            m = self._m
            m["requests"] += 1
            m["retries"] += retries
            m["failed"] += int(failed)
            m["seconds"] += seconds
            m["max_s"] = max(m["max_s"], seconds)
            if usage:
                m["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                m["completion_tokens"] += int(usage.get("completion_tokens") or 0)

    def take_metrics(self) -> dict[str, float]:
        """Counters since the last call (then reset): what the trainer logs per step."""
        with self._lock:
            m, n = self._m, self._m["requests"]
            out = {"judge/requests": n, "judge/retries": m["retries"], "judge/failed_requests": m["failed"],
                   "judge/request_s": m["seconds"] / n if n else None, "judge/request_max_s": m["max_s"] if n else None,
                   "judge/prompt_tokens": m["prompt_tokens"], "judge/completion_tokens": m["completion_tokens"]}
            self._zero()
        return out

    # ------------------------------------------------------------------------------ requests
    def _post_once(self, body: dict, url: str) -> dict:
        req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read().decode("utf-8", errors="replace"))
            message = f"judge server {url}: HTTP {exc.code}: {detail}"
            if exc.code in (401, 403):  # every request would fail the same way: a configuration error, not a retry
                key = (f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env
                       else "no key (set judge.http.api_key_env to the NAME of the variable holding one)")
                raise MinirftError(f"judge.http.url: {url} refused the request (HTTP {exc.code}: {detail}); "
                                   f"minirft sent {key}") from None
            if re.search(r"logprob|logits|echo", detail, re.IGNORECASE):
                raise _Refused(message) from None
            if exc.code in RETRY_STATUS:
                wait = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    seconds = float(wait) if wait is not None else None
                except ValueError:
                    seconds = None
                raise _Retryable(message, seconds) from None
            raise RuntimeError(message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise _Retryable(f"judge server {url}: {getattr(exc, 'reason', exc)}") from None

    def _post(self, body: dict, url: str | None = None) -> dict:
        t0, retries = time.perf_counter(), 0
        while True:
            try:
                out = self._post_once(body, url or self.url)
                self._note(time.perf_counter() - t0, out.get("usage") if isinstance(out, dict) else None, retries)
                return out
            except _Retryable as exc:
                if retries >= self.cfg.max_retries:
                    self._note(time.perf_counter() - t0, None, retries, failed=True)
                    raise RuntimeError(str(exc)) from None
                wait = exc.wait if exc.wait is not None else self.cfg.backoff_s * 2 ** retries
                time.sleep(min(MAX_WAIT_S, max(0.0, wait)))
                retries += 1
            except RuntimeError:
                self._note(time.perf_counter() - t0, None, retries, failed=True)
                raise

    def _body(self, prompt: str, max_tokens: int, logprobs: bool, stop: Sequence[str] = ()) -> dict:
        body: dict = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.chat:
            body["messages"] = chatml_messages(prompt)
            if logprobs:
                body.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body["prompt"] = prompt
            if logprobs:
                body["logprobs"] = self.top_logprobs
        if stop:
            body["stop"] = list(stop)
        return body

    def _one(self, q: Query, classes: Sequence[tuple[str, ...]]) -> Evaluation:
        prompt = "".join(q.segments)
        top = top_logprobs(self._post(self._body(prompt, 1, True)))
        probs = scoring.class_probs([[top.get(f, -math.inf) for f in forms] for forms in classes])
        text = ""
        if q.generate:
            out = self._post(self._body(prompt, q.generate, False, q.stop))
            choice = out["choices"][0]
            text = (choice.get("message", {}).get("content") if self.chat else choice.get("text")) or ""
            text = text.strip()
        return Evaluation(probs, text)

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        try:
            return list(self._pool.map(lambda q: self._one(q, classes), queries))
        except ValueError as exc:  # no label in the top-K, or a layout the chat api cannot split
            raise RuntimeError(f"judge server {self.url}: {exc}"
                               + ("" if "ChatML" in str(exc) else f" in the top {self.top_logprobs} logprobs")) from None

    # ------------------------------------------------------------------------------ contrast
    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Per ``score_last`` query: log P of each token of its last segment, from the server's prompt
        log-probabilities (``echo``); a server without them is a MinirftError naming the method."""
        return list(self._pool.map(self._score_one, queries))

    def _score_one(self, q: Query) -> TokenScores:
        prompt = "".join(q.segments)
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "echo": True,
                "logprobs": 1}
        try:
            out = self._post(body, self.completions_url)
        except _Refused as exc:
            raise MinirftError(f"judge.http.url: {self.completions_url} cannot return prompt log-probabilities, "
                               f"which criteria with method: contrast or direct need "
                               f"({_one_line(str(exc)).removeprefix(f'judge server {self.completions_url}: ')})"
                               + (" — start llama-cpp-python's server with --logits_all true"
                                  if "logits_all" in str(exc) else "")) from None
        return response_token_scores(out, prompt, len(prompt) - len(q.segments[-1]), self.completions_url)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _error_detail(body: str) -> str:
    """An error body's message (OpenAI shape ``{"error": {"message": …}}``), else its start."""
    try:
        message = json.loads(body)["error"]["message"]
        if isinstance(message, str):
            return message[:300]
    except (ValueError, KeyError, TypeError):
        pass
    return body[:200]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def response_token_scores(response: dict, prompt: str, start: int, url: str) -> TokenScores:
    """The log-probs and texts of the prompt's tokens from character ``start`` on, from an echoed
    legacy-completions response (``logprobs.tokens / token_logprobs / text_offset``).

    A token that starts before ``start`` but reaches past it (a merge across the boundary) counts as the
    response's; tokens at or after ``len(prompt)`` (the generated one) are dropped."""
    lacks = (f"judge.http.url: {url} returned no log-probabilities for the prompt's tokens, which criteria with "
             "method: contrast or direct need (the server ignores `echo: true`; llama-cpp-python's server and vLLM answer it, "
             "llama.cpp's llama-server does not)")
    try:
        lp = response["choices"][0]["logprobs"] or {}
        tokens, values, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
    except (KeyError, IndexError, TypeError):
        raise MinirftError(lacks) from None
    if not (len(tokens) == len(values) == len(offsets)) or not offsets or offsets[0] >= start:
        raise MinirftError(lacks)
    first = None
    for k, off in enumerate(offsets):
        end = offsets[k + 1] if k + 1 < len(offsets) else off + len(tokens[k])
        if off >= start or end > start:
            first = k
            break
    picked = [k for k in range(first if first is not None else len(offsets), len(offsets)) if offsets[k] < len(prompt)]
    if not picked or any(values[k] is None for k in picked) or (
            tokens[picked[-1]] and not prompt.startswith(tokens[picked[-1]], offsets[picked[-1]])):
        raise MinirftError(f"judge.http.url: {url}: the echoed prompt tokens do not line up with the prompt "
                           "(`text_offset` is not a character offset into it)")
    return TokenScores(np.asarray([float(values[k]) for k in picked], dtype=np.float64),
                       tuple(tokens[k] for k in picked))


def top_logprobs(response: dict) -> dict[str, float]:
    """{token text: logprob} at the first generated position, from any of the response shapes.

    Legacy completions (llama-cpp-python, vLLM): ``logprobs.top_logprobs[0]`` is a dict.
    Chat completions (OpenAI, vLLM, llama.cpp's server, llama-cpp-python):
    ``logprobs.content[0].top_logprobs`` is a list of ``{token, logprob}``.
    """
    try:
        lp = response["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"judge server response has no logprobs: {str(response)[:200]}") from None
    if lp is None:
        raise RuntimeError("judge server returned no logprobs (does it support `logprobs` on this endpoint?)")
    if lp.get("top_logprobs"):
        first = lp["top_logprobs"][0] or {}
        return {k: float(v) for k, v in first.items()}
    if lp.get("content"):
        return {d["token"]: float(d["logprob"]) for d in lp["content"][0].get("top_logprobs", [])}
    raise RuntimeError(f"judge server logprobs in an unknown shape: {str(lp)[:200]}")
