"""`data.path` in every format: JSONL, JSON, CSV, Parquet and a `datasets` save_to_disk folder load the
same rows; column names are configurable; bad rows name the file and line (or row)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from minirft.cli import cli
from minirft.data import load_prompts
from minirft.errors import MinirftError

ROWS = [
    {"question": "What is 2+3?", "answer": "5", "topic": "math"},
    {"question": "Name a primary colour.", "answer": "red", "topic": "art"},
    {"conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, who are you?"}],
     "answer": "an assistant", "topic": "chat"},
]
COLUMNS = {"prompt": "question", "messages": "conversation", "reference": "answer"}


def as_table(rows: list[dict]) -> dict[str, list]:
    keys = ["question", "conversation", "answer", "topic"]
    return {k: [r.get(k) for r in rows] for k in keys}


def write_all(d: Path) -> dict[str, Path]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    out["jsonl"] = d / "rows.jsonl"
    out["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out["json"] = d / "rows.json"
    out["json"].write_text(json.dumps(ROWS, indent=2))
    out["csv"] = d / "rows.csv"
    with out["csv"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "conversation", "answer", "topic"])
        w.writeheader()
        for r in ROWS:
            w.writerow({**r, "conversation": json.dumps(r["conversation"]) if "conversation" in r else ""})
    out["parquet"] = d / "rows.parquet"
    pq.write_table(pa.Table.from_pydict(as_table(ROWS)), out["parquet"])
    out["datasets"] = d / "rows_ds"
    datasets.Dataset.from_dict(as_table(ROWS)).save_to_disk(str(out["datasets"]))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("pyarrow")
    pytest.importorskip("datasets")
    return write_all(tmp_path_factory.mktemp("formats"))


def test_every_format_loads_the_same_rows(files):
    expected = load_prompts(files["jsonl"], COLUMNS)
    assert [r.prompt for r in expected] == ["What is 2+3?", "Name a primary colour.", "System: Be brief.\nUser: Hi, who are you?"]
    assert [r.reference for r in expected] == ["5", "red", "an assistant"]
    for fmt, path in files.items():
        rows = load_prompts(path, COLUMNS)
        assert [r.messages for r in rows] == [r.messages for r in expected], fmt
        assert [r.reference for r in rows] == [r.reference for r in expected], fmt
        assert [r.columns["topic"] for r in rows] == ["math", "art", "chat"], fmt


def test_line_numbers_per_format(files):
    assert [r.line for r in load_prompts(files["jsonl"], COLUMNS)] == [1, 2, 3]
    assert [r.line for r in load_prompts(files["json"], COLUMNS)] == [2, 7, 12]  # where each object starts
    assert [r.line for r in load_prompts(files["csv"], COLUMNS)] == [2, 3, 4]  # line 1 is the header
    assert [r.line for r in load_prompts(files["parquet"], COLUMNS)] == [1, 2, 3]  # row numbers


def test_json_object_holding_one_array(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"version": 1,\n "train": [\n  {"prompt": "a"},\n  {"prompt": "b"}\n ]}')
    rows = load_prompts(p)
    assert [r.prompt for r in rows] == ["a", "b"] and [r.line for r in rows] == [3, 4]


@pytest.mark.parametrize("fmt,message", [
    ("jsonl", r"rows\.jsonl:2: each row needs exactly one of `prompt`"),
    ("json", r"rows\.json:5: each row needs exactly one of `prompt`"),
    ("csv", r"rows\.csv:3: each row needs exactly one of `prompt`"),
    ("parquet", r"rows\.parquet: row 2: each row needs exactly one of `prompt`"),
    ("datasets", r"rows_ds: row 2: each row needs exactly one of `prompt`"),
])
def test_a_bad_row_names_the_file_and_line_or_row(tmp_path, fmt, message):
    pytest.importorskip("datasets")
    import minirft.data  # noqa: F401

    bad = [{"question": "fine"}, {"topic": "no prompt here"}]
    path = write_bad(tmp_path, fmt, bad)
    with pytest.raises(MinirftError, match=message):
        load_prompts(path, {"prompt": "question"})


def write_bad(d: Path, fmt: str, rows: list[dict]) -> Path:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = {k: [r.get(k) for r in rows] for k in ("question", "topic")}
    if fmt == "jsonl":
        p = d / "rows.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        p = d / "rows.json"
        p.write_text(json.dumps(rows, indent=2))
    elif fmt == "csv":
        p = d / "rows.csv"
        p.write_text("question,topic\nfine,\n,no prompt here\n")
    elif fmt == "parquet":
        p = d / "rows.parquet"
        pq.write_table(pa.Table.from_pydict(table), p)
    else:
        p = d / "rows_ds"
        datasets.Dataset.from_dict(table).save_to_disk(str(p))
    return p


def test_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text('[\n {"prompt": "a"},\n {"prompt": \n')
    with pytest.raises(MinirftError, match=r"broken\.json:4: invalid JSON"):
        load_prompts(tmp_path / "broken.json")
    (tmp_path / "extra.csv").write_text("prompt\nhello,world\n")
    with pytest.raises(MinirftError, match=r"extra\.csv:2: more cells than header columns"):
        load_prompts(tmp_path / "extra.csv")
    (tmp_path / "badchat.csv").write_text('messages\n"[{""role"": ""user""}"\n')
    with pytest.raises(MinirftError, match=r"badchat\.csv:2: `messages` must be a JSON list"):
        load_prompts(tmp_path / "badchat.csv")
    (tmp_path / "plain").mkdir()
    with pytest.raises(MinirftError, match="not one written by datasets' save_to_disk"):
        load_prompts(tmp_path / "plain")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(MinirftError, match=r"junk\.parquet: not a readable Parquet file"):
        load_prompts(tmp_path / "junk.parquet")


def test_dataset_dict_with_one_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["x", "y"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [r.prompt for r in load_prompts(tmp_path / "dd")] == ["x", "y"]
    two = datasets.DatasetDict({"train": dd["train"], "test": dd["train"]})
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(MinirftError, match=r"splits \['train', 'test'\]; point data.path at"):
        load_prompts(tmp_path / "two")
    assert len(load_prompts(tmp_path / "two" / "test")) == 2


def test_recipe_columns_through_the_cli(files, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "cols", "rewards": [{"type": "length"}],
                                      "data": {"path": str(files["parquet"]), "columns": COLUMNS}}))
    ok = CliRunner().invoke(cli, ["recipes", "validate", str(recipe)])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["recipes", "validate", str(recipe), "data.columns.prompt=nope"])
    assert bad.exit_code == 1 and "rows.parquet: row 1: each row needs exactly one of" in bad.output
    assert "Traceback" not in bad.output
