"""`minirft judge`: score a JSONL file of responses with a recipe's judge, outside training.

Rubric recipes read (prompt | messages, response[, reference]) rows and add ``reward`` and
``criteria``; preference recipes read (prompt | messages, response_a, response_b) rows and add
``p_a`` (swap-averaged P(response_a is better)), ``p_a_first`` and ``p_a_second``. Every input row
is validated before the model loads (a bad row is an error naming its line), and the output is
written to a temp file and renamed, so it is never half-written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from minirft.atomic import write_jsonl
from minirft.data import PromptRow, iter_jsonl, parse_row
from minirft.errors import MinirftError

CHUNK_ROWS = 16  # rows per judge call: enough to fill a batch, small enough for a lively progress bar


def read_rows(path: Path, mode: str) -> list[tuple[dict, PromptRow]]:
    """(original object, PromptRow) per line; any bad line is a MinirftError naming it."""
    fields = ("response",) if mode == "rubric" else ("response_a", "response_b")
    rows = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        row = parse_row({k: v for k, v in obj.items() if k not in fields}, where, lineno)
        for f in fields:
            if f not in obj:
                raise MinirftError(f"{where}: missing `{f}` (a {mode} judge needs {', '.join(fields)})")
            if not isinstance(obj[f], str):
                raise MinirftError(f"{where}: `{f}` must be a string")
        rows.append((obj, row))
    if not rows:
        raise MinirftError(f"{path}: no rows")
    return rows


def _groups(items: list[tuple[dict, PromptRow]]) -> list[list[int]]:
    """Consecutive rows with the same prompt and reference form one group (their prompt is decoded once)."""
    groups: list[list[int]] = []
    for i, (_, row) in enumerate(items):
        if groups and len(groups[-1]) < CHUNK_ROWS:
            prev = items[groups[-1][0]][1]
            if prev.messages == row.messages and prev.reference == row.reference:
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups


def score_file(judge, items, rationales: bool, progress) -> list[dict]:
    out: list[dict] = [dict(obj) for obj, _ in items]
    if judge.mode == "rubric":
        groups = _groups(items)
        for start in range(0, len(groups), CHUNK_ROWS):
            chunk = groups[start:start + CHUNK_ROWS]
            rows = [items[g[0]][1] for g in chunk]
            texts = [[items[i][0]["response"] for i in g] for g in chunk]
            scores = judge.score_groups(rows, texts, rationales)
            for g, ss in zip(chunk, scores):
                for i, s in zip(g, ss):
                    out[i].update(reward=s.reward, criteria=s.criteria)
                    if rationales:
                        out[i]["rationale"] = s.rationale
                        if s.criterion_rationales:
                            out[i]["criterion_rationales"] = s.criterion_rationales
                    if s.error:
                        out[i]["error"] = s.error
                        out[i]["line"] = items[i][1].line
                progress(len(g))
    else:
        for start in range(0, len(items), CHUNK_ROWS):
            chunk = items[start:start + CHUNK_ROWS]
            verdicts = judge.compare_many([r for _, r in chunk], [(o["response_a"], o["response_b"]) for o, _ in chunk],
                                          rationales)
            for k, v in enumerate(verdicts):
                out[start + k].update(p_a=v.p_a, p_a_first=v.p_a_first, p_a_second=v.p_a_second)
                if rationales:
                    out[start + k]["rationale"] = v.rationale
            progress(len(chunk))
    return out


def summary(rows: list[dict], mode: str, seconds: float) -> str:
    n = len(rows)
    lines = [f"{'rows':<24}{n}", f"{'seconds':<24}{seconds:.1f}", f"{'rows/s':<24}{n / max(seconds, 1e-9):.2f}"]
    if mode == "rubric":
        ok = [r for r in rows if r.get("reward") is not None]
        lines.append(f"{'errors':<24}{n - len(ok)}")
        if ok:
            lines.append(f"{'mean reward':<24}{sum(r['reward'] for r in ok) / len(ok):.3f}")
            for name in ok[0]["criteria"]:
                mean = sum(r["criteria"][name] for r in ok) / len(ok)
                lines.append(f"{'P(yes) ' + name:<24}{mean:.3f}")
    else:
        mean = sum(r["p_a"] for r in rows) / n
        wins = sum(r["p_a"] > 0.5 for r in rows) / n
        keep = sum((r["p_a_first"] > 0.5) == (r["p_a_second"] > 0.5) for r in rows) / n
        lines += [f"{'mean p_a':<24}{mean:.3f}", f"{'share p_a > 0.5':<24}{wins:.3f}",
                  f"{'swap consistency':<24}{keep:.3f}"]
    return "\n".join(lines)


def _judge_command_class():
    from minirft.commands.judge_serve import JudgeCommand  # `minirft judge serve RECIPE` (the HTTP service)

    return JudgeCommand


@click.command("judge", cls=_judge_command_class(), context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL: prompt|messages + response (rubric) or response_a + response_b (preference).")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL written atomically: the input fields plus the scores.")
@click.option("--rationales", is_flag=True, help="Also generate a short rationale per row (slower).")
@click.option("--force", is_flag=True, help="Replace --output when it exists (without it, that is refused).")
def judge_command(recipe: str, overrides: tuple[str, ...], input_path: Path, output_path: Path,
                  rationales: bool, force: bool = False) -> None:
    """Score a file of responses with RECIPE's judge (key=value overrides allowed).

    \b
    Examples:
      minirft judge recipes/polite.yaml --input responses.jsonl --output scored.jsonl
      minirft judge polite judge.deterministic=true --input r.jsonl --output s.jsonl --rationales
      minirft judge recipes/preference.yaml --input pairs.jsonl --output scored.jsonl
      minirft judge serve recipes/polite.yaml --port 8700     # the judge as an HTTP service

    \b
    Rubric rows:      {"prompt": "...", "response": "...", "reference": "..." (optional)}
    Preference rows:  {"prompt": "...", "response_a": "...", "response_b": "..."}
    """
    from minirft.judge import build_judge
    from minirft.preflight import check_model, needs_judge_model
    from minirft.recipe import find_recipe, load_recipe

    from minirft.rundir import check_output

    r = load_recipe(find_recipe(recipe), list(overrides))
    if r.judge is None:
        raise MinirftError(f"{r.source}: the recipe has no `judge` section")
    check_output(output_path, force=force)  # before the model loads
    if r.judge.self_judge:
        raise MinirftError(f"{r.where('judge', 'self_judge')}: judge.self_judge: a self-judge is the policy being "
                           "trained; `minirft judge` needs a judge.model")
    cfg = r.judge.model_copy(update={"rationales": "all" if rationales else "none"})
    items = read_rows(input_path, cfg.mode)  # every row checked before the model loads
    if needs_judge_model(r):
        cfg.model = check_model(r, "judge").name  # a relative path is relative to the recipe
    judge = build_judge(cfg)
    start = time.perf_counter()
    try:
        with click.progressbar(length=len(items), label="judging", file=sys.stderr, show_pos=True) as bar:
            rows = score_file(judge, items, rationales, bar.update)
    except (RuntimeError, OSError, ValueError) as exc:  # compare_many raises after its retries
        raise MinirftError(f"judge failed: {exc}") from None
    finally:
        judge.close()
    seconds = time.perf_counter() - start
    lines = [row.line for _, row in items]
    failed = [(n, out["error"]) for n, out in zip(lines, rows) if out.get("error")]
    for n, error in failed[:5]:
        click.echo(f"warning: {input_path}:{n}: not scored ({error})", err=True)
    if len(failed) > 5:
        click.echo(f"warning: {len(failed) - 5} more rows not scored (their `error` field says why)", err=True)
    clipped = judge.clipped
    if clipped:
        click.echo(f"warning: {clipped} response(s) longer than {judge.clip_chars} characters were cut before "
                   f"judging (judge.max_candidate_tokens={cfg.max_candidate_tokens} x 4 characters)", err=True)
    try:
        write_jsonl(output_path, rows)
    except OSError as exc:  # a full disk: the temp file is gone, the old output (if any) untouched
        from minirft.rundir import write_error

        raise write_error(output_path, exc, "the scores") from None
    click.echo(summary(rows, cfg.mode, seconds))
    click.echo(f"wrote {output_path}", err=True)
