"""Prompt datasets: JSONL, JSON, CSV, Parquet or a local Hugging Face ``datasets`` folder.

A row has either ``prompt`` (a string) or ``messages`` (a chat: a list of ``{role, content}`` whose
last turn is the user's), an optional ``reference`` (a reference answer, given to the judge and to
rule checks) and any other columns, which are passed through to reward functions by name. The three
column names can be changed (``data.columns.prompt|messages|reference`` in the recipe).

The format follows the path: ``.json`` (an array of objects, or ``{"<split>": [...]}`` with one
array), ``.csv`` / ``.tsv`` (a header row; a ``messages`` cell holds the chat as JSON text; an empty
cell is a missing value), ``.parquet`` (pyarrow), a folder written by ``Dataset.save_to_disk``
(``datasets.load_from_disk``: local files only, never a hub download); anything else is JSONL.
A bad row is an error naming the file and its line (JSONL, JSON, CSV) or its row number (Parquet,
datasets folders, counted from 1).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from minirft.errors import MinirftError, not_utf8, read_utf8

ROLES = {"system", "user", "assistant"}
CANONICAL = ("prompt", "messages", "reference")
# A prompt (all its turns) longer than this is refused: training keeps only its last
# policy.max_prompt_tokens tokens anyway, and a many-megabyte prompt would cost gigabytes to tokenize,
# judge and log. 1,000,000 characters is about 250k tokens, beyond any context minirft trains with.
MAX_PROMPT_CHARS = 1_000_000


@dataclass(frozen=True)
class PromptRow:
    messages: tuple[dict, ...]  # normalised chat; a plain `prompt` becomes one user turn
    reference: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # every other field of the row
    line: int = 0  # the line in a text file (JSONL, JSON, CSV), else the row number from 1

    @property
    def prompt(self) -> str:
        """The conversation as text (the last user turn alone when it is a single turn)."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line is a MinirftError."""
    path = Path(path)
    if path.is_dir():
        raise MinirftError(f"{path}: is a folder, not a JSONL data file")
    if not path.is_file():
        raise MinirftError(f"{path}: no such data file")
    with path.open("rb") as fh:
        for lineno, data in enumerate(fh, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(path, data, exc, first_line=lineno) from None
            if lineno == 1:
                raw = raw.removeprefix("\ufeff")  # a byte-order mark (Windows editors) is not data
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise MinirftError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise MinirftError(f"{path}:{lineno}: the JSON nests too deeply to be a data row") from None
            if not isinstance(obj, dict):
                raise MinirftError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def iter_json(path: Path) -> Iterator[tuple[str, int, dict]]:
    """A JSON array of row objects (or an object holding exactly one such array), each with its line."""
    text = read_utf8(path).removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MinirftError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise MinirftError(f"{path}: the JSON nests too deeply to be a data file") from None
    if isinstance(doc, dict):
        arrays = [k for k, v in doc.items() if isinstance(v, list)]
        if len(arrays) != 1:
            raise MinirftError(f"{path}: expected a JSON array of row objects (or an object with one array)")
        found = re.search(r"%s\s*:\s*\[" % re.escape(json.dumps(arrays[0])), text)
        start = found.end() - 1 if found else text.index("[")
    elif isinstance(doc, list):
        start = text.index("[")
    else:
        raise MinirftError(f"{path}: expected a JSON array of row objects, got {type(doc).__name__}")
    # Walk the array with raw_decode to know where each element starts, hence its line number.
    pos = start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        obj, end = decoder.raw_decode(text, pos)
        lineno = text.count("\n", 0, pos) + 1
        if not isinstance(obj, dict):
            raise MinirftError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield f"{path}:{lineno}", lineno, obj
        pos = end


def iter_csv(path: Path) -> Iterator[tuple[str, int, dict]]:
    """Rows of a CSV (TSV for ``.tsv``) with a header; an empty cell is a missing value."""
    data = path.read_bytes()
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is not part of the first header
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        err = not_utf8(path, data, exc)
        raise MinirftError(f"{err} — save the file as UTF-8 (Excel: \"CSV UTF-8\")") from None
    csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_PROMPT_CHARS))  # a cell may hold a whole chat
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        start = 2
        for raw in _csv_rows(reader, path):
            where = f"{path}:{start}"
            if None in raw:
                raise MinirftError(f"{where}: more cells than header columns ({len(reader.fieldnames or [])})")
            yield where, start, {k: v for k, v in raw.items() if v not in ("", None)}
            start = reader.line_num + 1


def _csv_rows(reader: csv.DictReader, path: Path) -> Iterator[dict]:
    """The reader's rows; a row csv cannot parse (a cell over the size limit…) is an error naming its line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MinirftError(f"{path}:{reader.line_num + 1}: not a readable CSV row ({exc})") from None


def iter_parquet(path: Path) -> Iterator[tuple[str, int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MinirftError(f"{path}: reading Parquet needs pyarrow: pip install 'minirft[data]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError family
        raise MinirftError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}: row {i}", i, row


def iter_hf_dataset(path: Path) -> Iterator[tuple[str, int, dict]]:
    """A folder written by ``Dataset.save_to_disk`` (or a DatasetDict with a single split)."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # load_from_disk is local anyway; belt and braces
    try:
        import datasets
    except ImportError:
        raise MinirftError(f"{path}: reading a datasets folder needs `datasets`: pip install 'minirft[data]'") from None
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise MinirftError(f"{path}: not a datasets save_to_disk folder ({str(exc).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if len(splits) != 1:
            raise MinirftError(f"{path}: a DatasetDict with splits {splits}; point data.path at {path}/<split>")
        path, ds = path / splits[0], ds[splits[0]]
    for i, row in enumerate(ds, start=1):
        yield f"{path}: row {i}", i, row


def iter_records(path: str | Path) -> Iterator[tuple[str, int, dict]]:
    """(where, line or row number, row object) for each row of a data file or folder, by its format."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            yield from iter_hf_dataset(path)
            return
        raise MinirftError(f"{path}: a folder, but not one written by datasets' save_to_disk "
                           "(no dataset_info.json or dataset_dict.json)")
    if not path.is_file():
        raise MinirftError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        yield from iter_json(path)
    elif suffix in (".csv", ".tsv"):
        yield from iter_csv(path)
    elif suffix in (".parquet", ".pq"):
        yield from iter_parquet(path)
    else:
        for lineno, obj in iter_jsonl(path):
            yield f"{path}:{lineno}", lineno, obj


def parse_messages(value: Any, where: str) -> tuple[dict, ...]:
    if isinstance(value, str):  # a CSV cell holds the chat as JSON text
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise MinirftError(f"{where}: `messages` must be a JSON list of {{role, content}} objects") from None
    if not isinstance(value, list) or not value:
        raise MinirftError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise MinirftError(
                f"{where}: messages[{i}] must be {{\"role\": one of {sorted(ROLES)}, \"content\": string}}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise MinirftError(f"{where}: the last message must be the user's (role \"user\")")
    return tuple(out)


def parse_row(obj: dict, where: str, lineno: int = 0) -> PromptRow:
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise MinirftError(f"{where}: each row needs exactly one of `prompt` (string) or `messages` (chat list)")
    if has_prompt:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise MinirftError(f"{where}: `prompt` must be a non-empty string")
        messages: tuple[dict, ...] = ({"role": "user", "content": obj["prompt"]},)
    else:
        messages = parse_messages(obj["messages"], where)
    size = sum(len(m["content"]) for m in messages)
    if size > MAX_PROMPT_CHARS:
        raise MinirftError(f"{where}: the prompt is {size:,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                           "(training keeps only its last policy.max_prompt_tokens tokens): shorten it")
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, (str, int, float)):
        raise MinirftError(f"{where}: `reference` must be a string or a number")
    columns = {k: v for k, v in obj.items() if k not in ("prompt", "messages")}
    return PromptRow(messages, None if reference is None else str(reference), columns, lineno)


def _rename(obj: dict, columns: Mapping[str, str] | None, tabular: bool) -> dict:
    """The row with the user's column names mapped to prompt/messages/reference. In a table every
    column is in every row, so a null in one of the three means "absent" there."""
    out = dict(obj)
    if columns:
        for canonical in CANONICAL:
            source = columns.get(canonical, canonical)
            if source != canonical:
                out.pop(canonical, None)  # an unrelated column that happens to bear the name
                if source in out:
                    out[canonical] = out.pop(source)
    if tabular:
        for canonical in CANONICAL:
            if canonical in out and out[canonical] is None:
                del out[canonical]
    return out


def load_prompts(path: str | Path, columns: Mapping[str, str] | Any | None = None) -> list[PromptRow]:
    """Every row of a data file or folder. ``columns`` maps prompt/messages/reference to the names the
    data uses (a dict, or the recipe's ``data.columns``)."""
    if columns is not None and not isinstance(columns, Mapping):
        columns = columns.model_dump()
    path = Path(path)
    tabular = path.is_dir() or path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq")
    rows = [parse_row(_rename(obj, columns, tabular), where, lineno) for where, lineno, obj in iter_records(path)]
    if not rows:
        names = columns or {}
        raise MinirftError(f"{path}: no rows (expected rows with a `{names.get('prompt', 'prompt')}` or "
                           f"`{names.get('messages', 'messages')}` column)")
    return rows
