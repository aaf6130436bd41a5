"""minirft.gguf_meta.read_string against the gguf package's own reader (a file written by gguf.GGUFWriter
with every kind of field before the key) and against llama.cpp on the embedded models' real GGUFs."""

import numpy as np
import pytest

from minirft.gguf_meta import read_string

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}é"


def _write(path, template: str | None):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("test.u32", 7)
    w.add_float64("test.f64", 0.5)
    w.add_bool("test.flag", True)
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.words", ["a", "bb", "ccc", "▁ü"])  # an array of strings: skipped by their lengths
    w.add_token_list([f"t{i}" for i in range(3000)])
    if template is not None:
        w.add_chat_template(template)
    w.add_string("test.after", "later")
    w.add_tensor("x", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_reads_the_same_string_as_the_gguf_package(tmp_path):
    import gguf

    path = _write(tmp_path / "t.gguf", TEMPLATE)
    field = gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"]
    assert read_string(path, "tokenizer.chat_template") == bytes(field.parts[field.data[0]]).decode() == TEMPLATE
    assert read_string(path, "test.after") == "later"
    assert read_string(path, "test.u32") is None  # not a string
    assert read_string(_write(tmp_path / "none.gguf", None), "tokenizer.chat_template") is None


def test_a_file_that_is_not_a_whole_gguf_is_a_value_error(tmp_path):
    data = _write(tmp_path / "t.gguf", TEMPLATE).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:200])
    with pytest.raises(ValueError, match="cut short"):
        read_string(tmp_path / "cut.gguf", "tokenizer.chat_template")
    (tmp_path / "x.gguf").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a GGUF"):
        read_string(tmp_path / "x.gguf", "tokenizer.chat_template")


@pytest.mark.parametrize("model", ["gemma3-270m", "smollm2-135m-instruct"])
def test_embedded_models_template_equals_llama_cpp(model):
    import llama_cpp
    from llama_cpp import _internals

    from minirft.models import resolve_model

    path = str(resolve_model(model).path)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    m = _internals.LlamaModel(path_model=path, params=params, verbose=False)
    try:
        raw = llama_cpp.llama_model_chat_template(m.model, None)
    finally:
        m.close()
    assert (read_string(path, "tokenizer.chat_template") or "") == (raw or b"").decode("utf-8")
