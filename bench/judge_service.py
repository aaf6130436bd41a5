"""`minirft judge serve` under concurrent clients: requests/s and p50/p99 latency, with and without
micro-batching.

Starts the real service (`python -m minirft judge serve RECIPE --port P [--no-batching]`) as a
subprocess, then C client threads (each its own keep-alive HTTP connection) send R `POST /score`
requests of one row each (distinct prompt/response pairs, so nothing is answered twice), and measure
each request's latency on the client side. Same rows, same judge, same machine for both modes.

    PYTHONPATH=$PWD:$PWD/kernels python bench/judge_service.py                      # recipes/polite.yaml (Gemma-270M)
    PYTHONPATH=$PWD:$PWD/kernels python bench/judge_service.py --recipe tiny --requests 25   # tiny random GGUF

Prints a table and writes bench/results/judge_service[_<tag>].json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TOPICS = ["tea", "rain", "maps", "owls", "jazz", "bread", "snow", "cats", "bikes", "clocks", "moss", "kites"]
STYLES = ["Sure! {t} is lovely, and I hope this helps.", "{t}? Who cares. Look it up yourself.",
          "Here are three facts about {t}: it is common, it is old, and people like it.",
          "I think {t} is fine.", "Thank you for asking about {t}! Happy to help."]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_recipe(work: Path) -> Path:
    import yaml
    from judge_fixtures import write_tiny_gguf

    gguf = write_tiny_gguf(work / "tiny.gguf")
    (work / "d.jsonl").write_text('{"prompt": "x"}\n')
    recipe = work / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"name": "tiny", "data": {"path": "d.jsonl"}, "judge": {
        "model": str(gguf), "n_threads": 1, "criteria": [
            {"name": "on_topic", "question": "Does the response address the user's question?"},
            {"name": "polite", "question": "Is the response polite and free of insults?"}]}}))
    return recipe


def start(recipe: str, port: int, batching: bool, threads: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "minirft", "judge", "serve", recipe, f"judge.n_threads={threads}", "--port", str(port)]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"judge serve exited: {log.read_text()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    raise SystemExit("judge serve did not start")


def warm(port: int) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/score", body=json.dumps({"rows": [{"prompt": "Hi", "response": "Hello"}]}))
    c.getresponse().read()


def load(port: int, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for i in range(requests):
            n = k * requests + i
            topic = TOPICS[n % len(TOPICS)]
            row = {"prompt": f"Tell me something about {topic}.",
                   "response": STYLES[(n // len(TOPICS)) % len(STYLES)].format(t=topic) + f" ({n})"}
            t0 = time.perf_counter()
            c.request("POST", "/score", body=json.dumps({"rows": [row]}), headers={"Content-Type": "application/json"})
            resp = c.getresponse()
            body = json.loads(resp.read())
            dt = time.perf_counter() - t0
            with lock:
                if resp.status == 200 and body["results"][0]["reward"] is not None:
                    latencies.append(dt)
                else:
                    failures.append(f"{resp.status}: {str(body)[:100]}")

    c0 = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c0.request("GET", "/health")
    before = json.loads(c0.getresponse().read())
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    c0.request("GET", "/health")
    after = json.loads(c0.getresponse().read())
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"requests": clients * requests, "answered": len(lat), "failures": failures[:5], "wall_s": wall,
            "requests_per_s": len(lat) / wall, "p50_s": statistics.median(lat), "p99_s": q[98],
            "mean_s": statistics.fmean(lat), "engine_calls": after["batches"] - before["batches"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "polite.yaml"), help="a recipe file, or 'tiny'")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=10, help="per client")
    ap.add_argument("--threads", type=int, default=2, help="judge threads (judge.n_threads)")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = str(tiny_recipe(work)) if args.recipe == "tiny" else args.recipe
        for mode, batching in (("micro-batched", True), ("one request per call", False)):
            port = free_port()
            proc = start(recipe, port, batching, args.threads, work / f"serve-{batching}.log")
            try:
                warm(port)
                results[mode] = load(port, args.clients, args.requests)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\njudge service, recipe={Path(args.recipe).name}, {args.clients} clients x {args.requests} requests "
          f"(1 row each), judge threads={args.threads}")
    print(f"{'mode':<22} {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'engine calls':>13} {'answered':>9}")
    for mode, r in results.items():
        print(f"{mode:<22} {r['requests_per_s']:>7.2f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f} "
              f"{r['engine_calls']:>13} {r['answered']:>5}/{r['requests']}")
    a, b = results["micro-batched"], results["one request per call"]
    speedup = a["requests_per_s"] / b["requests_per_s"]
    print(f"micro-batching: {speedup:.2f}x requests/s")
    tag = args.tag or ("tiny" if args.recipe == "tiny" else Path(args.recipe).stem)
    out = ROOT / "bench" / "results" / f"judge_service_{tag}.json"
    out.write_text(json.dumps({"settings": vars(args), "results": results, "speedup_requests_per_s": speedup},
                              indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
