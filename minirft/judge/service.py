"""The judge as an HTTP service: ``minirft judge serve RECIPE --port 8700``.

One process loads the judge once; clients POST JSON:

- ``POST /score``    ``{"rows": [{"prompt" | "messages", "response", "reference"?}], "rationales": false}``
  → ``{"results": [{"reward", "criteria", "rationale", "error"}]}`` (preference recipes: rows sharing a
  prompt form a group and each gets its mean win rate, as in training)
- ``POST /compare``  ``{"pairs": [{"prompt" | "messages", "response_a", "response_b"}], "rationales": false}``
  → ``{"results": [{"p_a", "p_a_first", "p_a_second", "rationale"}]}`` (preference recipes)
- ``POST /get_reward`` OpenRLHF's remote reward model protocol (``--remote_rm_url``):
  ``{"query": [prompt+response], "prompts": [prompt], "labels": [reference]}`` → ``{"rewards", "scores",
  "extra_logs"}``; the response is ``query`` with its ``prompts`` prefix removed
- ``GET /health``    ``{"status": "ok", "mode", "model", "queue", "requests", "batches", ...}``

Authentication: with a token (``--token`` or ``MINIRFT_JUDGE_TOKEN``) every request, /health included,
must send ``Authorization: Bearer <token>`` (compared in constant time); anything else is answered 401
before its body is read. Without one the service trusts whoever can reach its port: it listens on
127.0.0.1 unless told otherwise.

Micro-batching: request threads put their work on one bounded queue; a single worker takes what is
there (waiting up to ``batch_window_s`` for more, at most ``max_batch_rows`` rows) and judges it in one
engine call, so the shared-prefix cache (rubric header, each prompt) works across clients. A full
queue answers 503, a request that waits longer than ``request_timeout_s`` answers 504, bad JSON or a
bad row answers 400 with a one-line message, and a client that disconnects costs nothing but its
own answer. Standard library only (``http.server`` with a thread per connection, HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import hmac
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from minirft.data import PromptRow, parse_row
from minirft.errors import MinirftError
from minirft.judge.base import Judge

MAX_BODY = 8 * 2**20  # bytes per request
MAX_JSON_DEPTH = 64  # a request nests a few levels; far deeper is refused (400) before json.loads recurses
TOKEN_ENV = "MINIRFT_JUDGE_TOKEN"


class BadRequest(ValueError):
    """A 400: the message is sent to the client."""


@dataclass
class Work:
    kind: str  # "score" | "compare"
    rows: list[PromptRow]
    items: list[Any]  # score: response texts; compare: (a, b) pairs
    rationales: bool
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class ServiceConfig:
    max_batch_rows: int = 64  # rows judged in one engine call
    batch_window_s: float = 0.005  # how long the worker waits for more requests after the first
    max_queue: int = 256  # requests waiting; beyond it: 503
    request_timeout_s: float = 120.0  # a request waiting longer: 504
    max_rows_per_request: int = 512
    batching: bool = True  # False: one request per engine call (the bench's baseline)


class JudgeService:
    """The queue, the worker and the counters; transport-free (the HTTP layer is :func:`make_server`)."""

    def __init__(self, judge: Judge, cfg: ServiceConfig | None = None, *, model: str = "", mode: str | None = None):
        self.judge = judge
        self.cfg = cfg or ServiceConfig()
        self.mode = mode or judge.mode
        self.model = model
        self.queue: queue.Queue[Work] = queue.Queue(self.cfg.max_queue)
        self.stats = {"requests": 0, "rows": 0, "batches": 0, "rejected": 0, "timeouts": 0, "errors": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="judge-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------ requests
    def submit(self, work: Work) -> Any:
        """Queue ``work`` and wait for its result (raises queue.Full, TimeoutError or the judge's error)."""
        try:
            self.queue.put_nowait(work)
        except queue.Full:
            self._count("rejected")
            raise
        try:
            return work.future.result(timeout=self.cfg.request_timeout_s)
        except TimeoutError:
            work.future.cancel()  # still queued: the worker skips it
            self._count("timeouts")
            raise

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def health(self) -> dict:
        with self._lock:
            stats = dict(self.stats)
        stats.update(self.judge.totals())  # judge.cache: hits and misses since the service started
        return {"status": "ok", "mode": self.mode, "model": self.model, "queue": self.queue.qsize(),
                "batching": self.cfg.batching, **stats}

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)

    # ------------------------------------------------------------------------------ the worker
    def _take(self) -> list[Work]:
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch, rows = [first], len(first.rows)
        if not self.cfg.batching:
            return batch
        deadline = time.perf_counter() + self.cfg.batch_window_s
        while rows < self.cfg.max_batch_rows:
            left = deadline - time.perf_counter()
            try:
                nxt = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            batch.append(nxt)
            rows += len(nxt.rows)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = [w for w in self._take() if w.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            for kind in ("score", "compare"):
                part = [w for w in batch if w.kind == kind]
                if not part:
                    continue
                self._count("batches")
                try:
                    results = self._judge(kind, part)
                except Exception as exc:  # noqa: BLE001 - reported to each waiting client
                    self._count("errors", len(part))
                    for w in part:
                        w.future.set_exception(exc)
                    continue
                for w, res in zip(part, results):
                    w.future.set_result(res)

    def _judge(self, kind: str, part: list[Work]) -> list[list[dict]]:
        if kind == "compare":
            rows = [r for w in part for r in w.rows]
            pairs = [p for w in part for p in w.items]
            verdicts = self.judge.compare_many(rows, pairs, any(w.rationales for w in part))
            out, k = [], 0
            for w in part:
                mine = verdicts[k:k + len(w.rows)]
                k += len(w.rows)
                out.append([{"p_a": v.p_a, "p_a_first": v.p_a_first, "p_a_second": v.p_a_second,
                             **({"rationale": v.rationale} if w.rationales else {})} for v in mine])
            return out
        # score: each request's rows grouped by consecutive prompt; all requests' groups in one call
        groups, owner = [], []
        for wi, w in enumerate(part):
            for idx in _consecutive(w.rows):
                groups.append(idx)
                owner.append(wi)
        rows = [part[wi].rows[g[0]] for wi, g in zip(owner, groups)]
        texts = [[part[wi].items[i] for i in g] for wi, g in zip(owner, groups)]
        flags = [[part[wi].rationales] * len(g) for wi, g in zip(owner, groups)]
        scored = self.judge.score_groups(rows, texts, flags)
        out: list[list[dict | None]] = [[None] * len(w.rows) for w in part]
        for wi, g, ss in zip(owner, groups, scored):
            for i, s in zip(g, ss):
                out[wi][i] = {"reward": s.reward, "criteria": s.criteria,
                              **({"rationale": s.rationale} if part[wi].rationales else {}),
                              **({"error": s.error} if s.error else {})}
        return out  # type: ignore[return-value]


def _consecutive(rows: list[PromptRow]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, r in enumerate(rows):
        if groups and rows[groups[-1][0]].messages == r.messages and rows[groups[-1][0]].reference == r.reference:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


# ---------------------------------------------------------------------------------- parsing
def _list(body: dict, key: str, limit: int) -> list:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(f"`{key}` must be a non-empty list")
    if len(value) > limit:
        raise BadRequest(f"`{key}`: at most {limit} items per request, got {len(value)}")
    return value


def _row(obj: Any, where: str, fields: tuple[str, ...]) -> tuple[PromptRow, list[str]]:
    if not isinstance(obj, dict):
        raise BadRequest(f"{where}: expected an object")
    for f in fields:
        if not isinstance(obj.get(f), str):
            raise BadRequest(f"{where}: `{f}` must be a string")
    try:
        row = parse_row({k: v for k, v in obj.items() if k not in fields}, where)
    except MinirftError as exc:
        raise BadRequest(str(exc)) from None
    return row, [obj[f] for f in fields]


def parse_score(body: dict, limit: int) -> Work:
    rows, texts = [], []
    for i, obj in enumerate(_list(body, "rows", limit)):
        row, (text,) = _row(obj, f"rows[{i}]", ("response",))
        rows.append(row)
        texts.append(text)
    return Work("score", rows, texts, bool(body.get("rationales", False)))


def parse_compare(body: dict, limit: int) -> Work:
    rows, pairs = [], []
    for i, obj in enumerate(_list(body, "pairs", limit)):
        row, (a, b) = _row(obj, f"pairs[{i}]", ("response_a", "response_b"))
        rows.append(row)
        pairs.append((a, b))
    return Work("compare", rows, pairs, bool(body.get("rationales", False)))


def parse_openrlhf(body: dict, limit: int) -> Work:
    """OpenRLHF: ``query`` = prompt + response (chat template applied), ``prompts`` = the prompt part."""
    queries = _list(body, "query", limit)
    prompts = body.get("prompts") or [""] * len(queries)
    labels = body.get("labels") or [None] * len(queries)
    if not isinstance(prompts, list) or len(prompts) != len(queries):
        raise BadRequest("`prompts` must be a list as long as `query`")
    if not isinstance(labels, list) or len(labels) != len(queries):
        raise BadRequest("`labels` must be a list as long as `query`")
    rows, texts = [], []
    for i, (q, p, label) in enumerate(zip(queries, prompts, labels)):
        if not isinstance(q, str) or not isinstance(p, str):
            raise BadRequest(f"query[{i}] and prompts[{i}] must be strings")
        response = q[len(p):] if p and q.startswith(p) else q
        obj: dict = {"prompt": p.strip() or "(no prompt given)"}
        if label not in (None, ""):
            obj["reference"] = label if isinstance(label, (str, int, float)) else json.dumps(label)
        rows.append(parse_row(obj, f"query[{i}]"))
        texts.append(response)
    return Work("score", rows, texts, False)


# ---------------------------------------------------------------------------------- HTTP
def json_depth(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests more than ``limit`` brackets deep (strings are skipped)."""
    depth, in_str, escaped = 0, False, False
    for ch in raw:
        if in_str:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:  # quote
                in_str = False
        elif ch == 0x22:
            in_str = True
        elif ch in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return False


def make_server(service: JudgeService, host: str, port: int, token: str | None = None) -> ThreadingHTTPServer:
    """The HTTP server over ``service``; with ``token``, requests need ``Authorization: Bearer <token>``."""
    cfg = service.cfg
    expected = f"Bearer {token}".encode("utf-8") if token else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "minirft-judge"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: no line per request
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
                self.close_connection = True  # the client left; nothing to answer

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": message})

        def _authorised(self) -> bool:
            """True without a token; else the request's bearer token must match (constant-time compare).
            A refused request is answered 401 and its connection closed (its body is never read)."""
            if expected is None:
                return True
            given = (self.headers.get("Authorization") or "").strip().encode("utf-8", "replace")
            if hmac.compare_digest(given, expected):
                return True
            self.close_connection = True
            data = json.dumps({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}).encode()
            try:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="minirft-judge"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
                pass
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorised():
                return
            if self.path.rstrip("/") in ("/health", ""):
                self._send(200, service.health())
            else:
                self._error(404, f"no such endpoint: GET {self.path} (GET /health, POST /score, /compare, "
                                 "/get_reward)")

        def do_POST(self) -> None:  # noqa: N802
            parsers = {"/score": parse_score, "/compare": parse_compare, "/get_reward": parse_openrlhf}
            if not self._authorised():
                return
            path = self.path.split("?")[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                return self._error(413 if length > MAX_BODY else 400, "a JSON body with a valid Content-Length "
                                   f"(at most {MAX_BODY} bytes) is required")
            try:
                raw = self.rfile.read(length)
            except (ConnectionResetError, TimeoutError):
                self.close_connection = True
                return
            if path not in parsers:
                return self._error(404, f"no such endpoint: POST {self.path}")
            try:
                if json_depth(raw, MAX_JSON_DEPTH):
                    raise BadRequest(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
                body = json.loads(raw.decode("utf-8"))
                if not isinstance(body, dict):
                    raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
                work = parsers[path](body, cfg.max_rows_per_request)
                if work.kind == "compare" and service.mode != "preference":
                    raise BadRequest("POST /compare needs a preference recipe (judge.mode: preference)")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self._error(400, f"invalid JSON: {exc}")
            except RecursionError:
                return self._error(400, "the JSON nests too deeply")
            except BadRequest as exc:
                return self._error(400, str(exc))
            service._count("requests")
            service._count("rows", len(work.rows))
            try:
                results = service.submit(work)
            except queue.Full:
                return self._error(503, f"judge queue full ({cfg.max_queue} requests waiting); retry later")
            except TimeoutError:
                return self._error(504, f"judging took longer than {cfg.request_timeout_s:g} s")
            except Exception as exc:  # noqa: BLE001 - the judge failed after its retries
                return self._error(502, f"judge failed: {type(exc).__name__}: {exc}"[:500])
            if path == "/get_reward":
                rewards = [r["reward"] for r in results]
                names = sorted({k for r in results for k in r["criteria"]})
                return self._send(200, {"rewards": [0.0 if x is None else x for x in rewards],
                                        "scores": [0.0 if x is None else x for x in rewards],
                                        "extra_logs": {f"criteria/{n}": [r["criteria"].get(n) for r in results]
                                                       for n in names}})
            self._send(200, {"results": results})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

        def handle_error(self, request: Any, client_address: Any) -> None:  # a client that vanished mid-request
            pass

    return Server((host, port), Handler)
