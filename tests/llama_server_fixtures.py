"""A real llama-cpp-python OpenAI-compatible server on 127.0.0.1, started and stopped around a test module."""

import json
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from trl_fixtures import env, free_port


@contextmanager
def llama_server(model: str, log_path, *extra: str, api_key: str | None = None, n_ctx: int = 4096):
    """Yield the server's base URL (``http://127.0.0.1:PORT/v1``) once ``/models`` answers; ``extra`` are more
    server flags. Fails the test with the log's tail if the server exits or does not start in 120 s."""
    port = free_port()
    auth = ["--api_key", api_key] if api_key else []
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1", *extra, *auth],
                            stdout=log, stderr=subprocess.STDOUT, env=env())
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "/models", headers=headers), timeout=2) as r:
                    json.loads(r.read())
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("llama_cpp.server did not start in 120 s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
