"""Prompt datasets: JSONL, one row per line.

A row has either ``prompt`` (a string) or ``messages`` (a chat: a list of ``{role, content}`` whose
last turn is the user's), an optional ``reference`` (a reference answer, given to the judge and to
rule checks) and any other columns, which are passed through to reward functions by name.

Any bad line is an error naming the file and the line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from minirft.errors import MinirftError, not_utf8

ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class PromptRow:
    messages: tuple[dict, ...]  # normalised chat; a plain `prompt` becomes one user turn
    reference: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # every other field of the row
    line: int = 0

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
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise MinirftError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise MinirftError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def parse_messages(value: Any, where: str) -> tuple[dict, ...]:
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
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, (str, int, float)):
        raise MinirftError(f"{where}: `reference` must be a string or a number")
    columns = {k: v for k, v in obj.items() if k not in ("prompt", "messages")}
    return PromptRow(messages, None if reference is None else str(reference), columns, lineno)


def load_prompts(path: str | Path) -> list[PromptRow]:
    rows = [parse_row(obj, f"{path}:{lineno}", lineno) for lineno, obj in iter_jsonl(path)]
    if not rows:
        raise MinirftError(f"{path}: no rows (expected JSONL with a `prompt` or `messages` per line)")
    return rows
