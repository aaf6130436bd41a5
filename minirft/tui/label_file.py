"""``minirft label FILE.jsonl``: the watch UI's labelling view over a file of judged rows.

FILE is ``minirft judge`` output: rubric rows (prompt | messages, response, reward, criteria) or
preference rows (prompt | messages, response_a, response_b, p_a). Each row becomes one group of
the view (its ``g.i`` is the file's line number), 50 rows a page (``p`` / ``n``). Verdicts are
appended to ``FILE.labels.jsonl`` in the format ``minirft calibrate`` reads (:mod:`minirft.labels`).
"""

from __future__ import annotations

from pathlib import Path

from minirft.data import iter_jsonl, parse_row
from minirft.errors import MinirftError
from minirft.events import check_record

PAGE = 50


def labels_path_for(path: Path) -> Path:
    return path.with_name(path.stem + ".labels.jsonl")


def records_from_judged(path: Path) -> tuple[str, list[dict], dict[int, dict]]:
    """(mode, event records for a RunState, line -> the row's prompt fields); errors name the line."""
    rows, mode = [], None
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        this = "preference" if "response_a" in obj else "rubric" if "response" in obj else None
        if this is None:
            raise MinirftError(f"{where}: not a `minirft judge` output row (needs `response`, or "
                               "`response_a` and `response_b`)")
        if mode and this != mode:
            raise MinirftError(f"{where}: {this} row in a file of {mode} rows")
        mode = this
        row = parse_row({k: v for k, v in obj.items() if k in ("prompt", "messages", "reference")}, where, lineno)
        rows.append((lineno, obj, row))
    if not rows:
        raise MinirftError(f"{path}: no rows")
    t0 = path.stat().st_mtime
    records: list[dict] = [{"type": "run_start", "time": t0, "step": 0, "run_name": path.name,
                            "recipe": {"judge": {"mode": mode}}, "policy_model": "(a file of judged rows)",
                            "judge_model": "as scored by minirft judge", "total_steps": -(-len(rows) // PAGE)}]
    sources: dict[int, dict] = {}
    for k, (lineno, obj, row) in enumerate(rows):
        step = k // PAGE + 1
        sources[lineno] = {key: obj[key] for key in ("prompt", "messages", "reference") if key in obj}
        base = {"type": "sample", "time": t0, "step": step, "group": lineno, "prompt": row.prompt,
                "rationale": obj.get("rationale"), "judge_error": obj.get("error")}
        if mode == "rubric":
            records.append({**base, "index": 0, "completion": obj["response"], "reward": obj.get("reward"),
                            "rewards": {"judge": obj.get("reward")}, "criteria": obj.get("criteria") or {}})
        else:
            p_a = obj.get("p_a")
            p_b = 1.0 - p_a if isinstance(p_a, (int, float)) else None
            records.append({**base, "index": 0, "completion": obj["response_a"], "reward": p_a,
                            "rewards": {"judge": p_a}, "criteria": {}})
            records.append({**base, "index": 1, "completion": obj["response_b"], "reward": p_b,
                            "rewards": {"judge": p_b}, "criteria": {}})
        for rec in records[-2 if mode == "preference" else -1:]:  # the shape the viewer relies on
            problem = check_record(rec)
            if problem is not None:
                raise MinirftError(f"{path}:{lineno}: {_field_names(problem, mode)}")
    for step in sorted({r["step"] for r in records if r["type"] == "sample"}):
        rewards = [r["reward"] for r in records if r["type"] == "sample" and r["step"] == step
                   and isinstance(r["reward"], (int, float))]
        records.append({"type": "step", "time": t0, "step": step,
                        "metrics": {"reward": sum(rewards) / len(rewards) if rewards else None}})
    records.append({"type": "run_end", "time": t0, "step": 0, "status": "finished",
                    "message": f"{len(rows)} judged rows from {path.name}; labels go to {labels_path_for(path).name}"})
    return mode, records, sources


def _field_names(problem: str, mode: str) -> str:
    """check_record's words for a sample record, in the judged file's own field names."""
    names = {"completion": "response" if mode == "rubric" else "response_a / response_b",
             "reward": "reward" if mode == "rubric" else "p_a", "judge_error": "error",
             "rewards.judge": "reward" if mode == "rubric" else "p_a"}
    for ours, theirs in names.items():
        if problem.startswith(ours + " "):
            return theirs + problem[len(ours):]
    return problem


def make_label_app(path: Path, **kwargs):
    """The labelling app over ``path`` (tests drive it with Textual's pilot)."""
    from minirft.tui.app import WatchApp
    from minirft.tui.tailer import LogGrew

    mode, records, sources = records_from_judged(path)

    class LabelApp(WatchApp):
        TITLE = "minirft label"

        def _tail_worker(self) -> None:  # the whole file at once, no log to follow
            self.tail._buffer.extend(records)
            self.post_message(LogGrew())

        def label_extra(self, sample) -> dict:
            return dict(sources.get(sample.group, {}))  # the row's own prompt / messages / reference

    return LabelApp(path.parent, labels_path=labels_path_for(path), **kwargs)
