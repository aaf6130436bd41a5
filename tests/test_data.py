import json

import pytest

from minirft.data import load_prompts
from minirft.errors import MinirftError


def write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_prompt_and_messages_rows(tmp_path):
    p = write(tmp_path, [
        json.dumps({"prompt": "2+2?", "reference": 4, "topic": "math"}),
        "",
        json.dumps({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]}),
    ])
    rows = load_prompts(p)
    assert rows[0].messages == ({"role": "user", "content": "2+2?"},)
    assert rows[0].reference == "4" and rows[0].columns == {"reference": 4, "topic": "math"}
    assert rows[0].line == 1 and rows[1].line == 3
    assert rows[1].prompt == "System: be nice\nUser: hi"


@pytest.mark.parametrize("line,message", [
    ("{not json", r"d.jsonl:2: invalid JSON"),
    ("[1, 2]", r"d.jsonl:2: expected a JSON object"),
    (json.dumps({"text": "x"}), r"d.jsonl:2: each row needs exactly one of `prompt`"),
    (json.dumps({"prompt": ""}), r"d.jsonl:2: `prompt` must be a non-empty string"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), r"d.jsonl:2: messages\[0\] must be"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
     r"d.jsonl:2: the last message must be the user's"),
])
def test_bad_line_names_file_and_line(tmp_path, line, message):
    p = write(tmp_path, [json.dumps({"prompt": "ok"}), line])
    with pytest.raises(MinirftError, match=message):
        load_prompts(p)


def test_empty_and_missing(tmp_path):
    with pytest.raises(MinirftError, match="no rows"):
        load_prompts(write(tmp_path, [""]))
    with pytest.raises(MinirftError, match="no such data file"):
        load_prompts(tmp_path / "none.jsonl")
