"""The documentation, checked: every relative link of README.md and docs/*.md resolves (file and anchor), the
recipe schema reference is the generator's output, and every figure a paragraph or table row quotes next to
a `bench/results/...json` file is found in that JSON (at the rounding shown).

A figure is checked in its *unit*: a paragraph, a list item, or a table row; a table row that names no JSON
is checked against the JSON its caption (the paragraph right above the table) names. Figures are the
numbers written with a decimal point, a sign or a unit; counts and settings (16 completions, 2 threads),
`code`, dates, years, versions and parts of names (SmolLM2, 8B, 4x8x2) are not. A figure is found when a
number of the JSON rounds to it at the digits shown (scaled as its unit allows: % of a fraction, MB/GB of
bytes, ms or minutes of seconds), or one of the JSON's strings holds it; a ratio (×), a gain (%) or a
signed difference (Δ −0.02) may also come from two figures of the same unit or table, or of a small JSON.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Figures quoted beside a JSON that the JSON does not hold: (doc, the figure as written) -> why. Each was
# looked up by hand when the README was split into docs/ (they were in the README as they are); the test
# fails on any other untraced figure, and on an entry here that is no longer needed.
B, T = "docs/benchmarks.md", "docs/trust.md"
UNTRACED: dict[tuple[str, str], str] = {
    (B, "50"): "judge agreement: 'each pair took about 40–50 s', an observation of the stopped run",
    (B, "4.00"): "policy_cpu: 'an earlier run of the same script gave 4.00 s against 4.32 s' (overwritten)",
    (B, "4.32"): "policy_cpu: the same earlier run",
    (B, "20"): "policy_cpu: 'the gain varies from 7% to 20%' (20% from that earlier run); and calibrate_hh's "
               "wall '20 min' (the JSON holds no wall time)",
    (B, "18"): "the design's step-time target '≤ 18 s', not a measurement",
    (B, "2.5"): "the design's memory target '≤ 2.5 GB', not a measurement",
    (B, "−0.015"): "recipe runs: arithmetic greedy eval (0.540 → 0.526, Δ −0.015); only the sampled one is kept",
    (B, "0.167"): "recipe runs: formal reward steps 16–20, a mean bench/run_summary.py takes of formal-steps.jsonl",
    (B, "2.49"): "recipe runs: peak RSS from /usr/bin/time -v (the caption says so), not saved",
    (B, "2.53"): "recipe runs: polite peak RSS from /usr/bin/time -v, not saved",
    (B, "1.043"): "recipe runs: polite reward steps 1–5, a mean of polite-b-steps.jsonl (run_summary.py)",
    (B, "1.040"): "recipe runs: polite reward steps 16–20, the same",
    (B, "0.789"): "recipe runs: polite's criterion steps 1–5, a mean of polite-b-steps.jsonl (run_summary.py); a number "
                  "of the old arith-judge-steps.jsonl matched it by chance",
    (B, "0.85"): "formal's AUC: in bench/results/judge_methods.json, not the recipe_runs files the item names",
    (B, "0.90"): "formal's AUC interval: judge_methods.json, as above",
    (B, "0.83"): "formal's test-half AUC: judge_methods.json, as above",
    (B, "70"): "formal: 'the judge is 70% of the step', a ratio of step means from formal-steps.jsonl",
    (B, "0.875"): "howto's jury AUC: judge_methods.json, not the recipe_runs files the item names",
    (B, "290"): "howto rerun stopped under load ('250–290 s a judge step'), not saved",
    (B, "44"): "arithmetic eval as a percentage (0.442): arith-a-eval.json; the item names recipe_criteria-*.json",
    (B, "0.54"): "arithmetic greedy eval (not kept), as for −0.015",
    (B, "0.50"): "an earlier 48-prompt held-out set (0.50 → 0.625), not kept",
    (B, "0.25"): "arith-a-eval.json's base rate; the item names recipe_criteria-arithmetic.json",
    (B, "0.524"): "howto reward steps 1–5: a mean of howto-a-steps.jsonl; the item names recipe_criteria-*.json",
    (B, "0.281"): "howto greedy list rate: howto-a-eval.json; the item names recipe_criteria-howto*.json",
    (B, "0.125"): "howto greedy list rate after training: howto-a-eval.json, as above",
    (B, "0.8"): "howto's sampling temperature 0.8, a setting",
    (B, "0.72"): "howto at temperature 1.0: the item names -howto-t1.json without its bench/results/ prefix",
    (B, "0.69"): "the first howto run's judge AUC: -howto-t1-no-few-shot.json, named without its prefix",
    (B, "0.797"): "the first howto run's reward (steps 1–5 mean of howto-b-steps.jsonl)",
    (B, "0.845"): "the first howto run's reward (steps 16–20 mean), the same",
    (B, "0.188"): "the first howto run's greedy list rate: howto-b-eval.json, not the file the item names",
    (B, "0.06"): "tui_open: the quieter run (load ≈4); tui_open.json holds only the last run (load 6.4–7.2)",
    (B, "0.43"): "tui_open: the quieter run, as above",
    (B, "0.20"): "tui_open: the quieter run, as above",
    (B, "0.27"): "tui_open: the quieter run, as above",
    (B, "1.08"): "tui_open: the quieter run, as above",
    (B, "6.5"): "tui_open: the load '≈6.5–7' (the JSON has 6.38 and 7.22)",
    (B, "8"): "calibrate_hh wall '8 min': the JSON holds no wall time",
    (T, "17"): "eval of the polite run: the wall time '3 min 17 s' is not in eval_polite_run.json",
    (T, "0.002"): "eval of the polite run: 'all within 0.002 of a tie', a bound over its pairs",
}


# ------------------------------------------------------------------------------------------ parsing
def _strip_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the text outside fenced code blocks and HTML comments."""
    out, fence = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence and not line.lstrip().startswith("<!--"):
            out.append((i, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*|_(?=\W)|(?<=\W)_|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _strip_fences(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return frozenset(out)


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for lineno, line in _strip_fences(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)
        found += [(lineno, m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", line)]
    return found


# -------------------------------------------------------------------------------------------- links
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    bad = []
    for lineno, target in links(doc):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        where = f"{doc.relative_to(ROOT)}:{lineno}: {target}"
        if not dest.exists():
            bad.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{where}: no heading with anchor #{anchor}")
    assert bad == []


def test_the_link_checker_sees_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Some `code` heading\n\n[ok](#top) [ok](a.md#some-code-heading)\n"
                                   "[bad](b.md) [bad](#nowhere)\n```\n[in code](c.md)\n```\n", encoding="utf-8")
    doc = tmp_path / "a.md"
    targets = [t for _, t in links(doc)]
    assert targets == ["#top", "a.md#some-code-heading", "b.md", "#nowhere"]
    assert anchors(doc) == {"top", "some-code-heading"}


def test_readme_is_short_and_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in linked, f"README.md does not link docs/{doc.name}"


# ------------------------------------------------------------------------------------ recipe schema
def test_recipe_schema_reference_is_generated():
    spec = importlib.util.spec_from_file_location("recipes_doc", ROOT / "scripts" / "recipes_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = mod.DOC.read_text(encoding="utf-8")
    assert committed == mod.render_docs(), "docs/recipes.md is out of date: run python scripts/recipes_doc.py"
    from minirft.recipe import Recipe, TrainingConfig
    assert "### TrainingConfig" in committed and "| `lr_schedule` |" in committed
    assert all(f"| `{k}` |" in committed for k in Recipe.model_fields if k != "source")
    assert all(f"| `{k}` |" in committed for k in TrainingConfig.model_fields)


# ------------------------------------------------------------------------------------------ figures
JSON_REF = re.compile(r"bench/results/[\w\-./*{},…]+")
NUMBER = re.compile(r"(?<![\w.\-/])([-−+]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:e([-+]?\d+))?(?![\w]|\.\d|-[A-Za-z])")


def units(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line, text, JSON patterns that apply) of every paragraph, list item and table row."""
    blocks: list[list[tuple[int, str]]] = []
    prev_blank = True
    for lineno, line in _strip_fences(text):
        starts = line.startswith(("|", "- ", "* ")) or re.match(r"^\d+\. ", line) or line.startswith("#")
        if not line.strip():
            prev_blank = True
            continue
        if prev_blank or starts or (blocks and blocks[-1][0][1].startswith(("|", "#"))):
            blocks.append([])
        blocks[-1].append((lineno, line))
        prev_blank = False
    out, caption = [], []
    for block in blocks:
        body = " ".join(line for _, line in block)
        refs = JSON_REF.findall(body)
        if body.startswith("|"):
            out.append((block[0][0], body, refs or caption))
            continue
        caption = refs
        out.append((block[0][0], body, refs))
    return out


def expand(pattern: str) -> list[Path]:
    """The .json/.jsonl files a reference names: braces and globs expanded, a folder is every file in it,
    a name without its extension (`recipe_runs/formal-*`) is completed; other files (.md, .log) are skipped."""
    pattern = pattern.rstrip(".,;:)…")
    m = re.search(r"\{([^}]*)\}", pattern)
    if m:
        return [f for alt in m.group(1).split(",") for f in expand(pattern[:m.start()] + alt + pattern[m.end():])]
    if pattern.endswith("/"):
        pattern += "*"
    elif re.search(r"\.\w+$", pattern) and not pattern.endswith((".json", ".jsonl")):
        return []
    elif not pattern.endswith((".json", ".jsonl", "*")):
        pattern += "*"
    return [p for p in sorted(ROOT.glob(pattern)) if p.is_file() and p.suffix in (".json", ".jsonl")]


@lru_cache(maxsize=None)
def json_numbers(path: Path) -> tuple[frozenset[float], str]:
    """Every number of a JSON or JSON-lines file, and its strings joined (for figures held in text)."""
    nums, strings = set(), []

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)) and math.isfinite(v):
            nums.add(float(v))
        elif isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            strings.extend(v.keys())
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                walk(json.loads(line))
    else:
        walk(json.loads(text))
    return frozenset(nums), "\n".join(strings)


# the scales a figure may be shown at, by the unit written after it
SCALES = {"%": (1, 100), "ms": (1, 1e3), "MB": (1, 1e-6, 2 ** -20, 1e3), "GB": (1, 1e-9, 2 ** -30, 1e-3),
          "min": (1, 1 / 60), "s": (1, 1e-3)}
UNIT = re.compile(r"^\s?(%|×|x(?![a-z])|ms\b|MB\b|GB\b|min\b|s\b|tok/s|cand/s|requests/s)")


def _close(value: float, decimals: int, candidates, unit: str = "") -> bool:
    tol = 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(value))
    return any(abs(c * s - value) <= tol for c in candidates for s in SCALES.get(unit, (1,)))


def figures(body: str) -> list[tuple[str, float, int, str, bool]]:
    """(as written, value, decimals shown, unit, signed) of the figures of a unit: the numbers written with
    a decimal point, a sign, or a unit (%, ×, s, ms, MB, GB, min, tok/s); a plain integer is a count or a
    setting (16 completions, 2 threads), not a figure."""
    body = re.sub(r"`[^`]*`", " ", body)
    body = re.sub(r"\]\([^)]*\)", "]", body)
    body = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", " ", body)
    out = []
    for m in NUMBER.finditer(body):
        sign, whole, frac, exp = m.groups()
        digits = whole.replace(",", "") + (frac or "")
        after = body[m.end():m.end() + 12]
        if re.match(r"[x×][0-9]", after):
            continue  # a shape, 8x4x2
        unit = UNIT.match(after)
        unit = unit.group(1) if unit else ""
        signed = bool(sign) or body[max(0, m.start() - 2):m.start()].strip().endswith("Δ")
        if not (frac or exp or unit or sign):
            continue
        if re.search(r"(torch|TRL|Triton|numpy|Python|transformers|bitsandbytes|peft|cu|v)\s?$", body[:m.start()]):
            continue  # a version
        if not (frac or exp) and 1990 <= int(whole.replace(",", "")) <= 2100:
            continue  # a year
        value = float(digits) * (10 ** int(exp) if exp else 1)
        decimals = len(frac) - 1 if frac else 0
        if exp:
            decimals = max(decimals - int(exp), 0)
        out.append((m.group(0), -value if sign in ("-", "−") else value, decimals, unit, signed))
    return out


@lru_cache(maxsize=None)
def _derived(files: tuple[Path, ...], kind: str) -> np.ndarray:
    """Sorted ratios, relative gains in % or absolute differences of every two numbers of a small JSON (at
    most 100 numbers: beyond that, pairs cover every value at two decimals and would prove nothing)."""
    nums = np.array(sorted(set().union(*(json_numbers(f)[0] for f in files))))
    if len(nums) > 100 or len(nums) < 2:
        return np.array([])
    return _pairs(nums, kind)


def _pairs(values, kind: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    a, b = v[:, None], v[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"ratio": np.where(b != 0, a / b, np.nan), "gain%": np.where(b != 0, (a / b - 1) * 100, np.nan),
               "difference": np.abs(a - b)}[kind]
    np.fill_diagonal(out, np.nan)
    out = out.ravel()
    return np.sort(out[np.isfinite(out)])


def _near(value: float, decimals: int, sorted_values: np.ndarray) -> bool:
    if not len(sorted_values):
        return False
    tol = 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(value))
    i = np.searchsorted(sorted_values, value - tol)
    return bool(i < len(sorted_values) and sorted_values[i] <= value + tol)


def untraced_figures(text: str) -> list[tuple[int, str, str]]:
    """(line, figure, the unit's start) of every figure quoted beside a JSON that the JSON does not hold.

    A figure is found when a number of the JSON rounds to it (at the scales its unit allows) or one of the
    JSON's strings holds it as written; a ratio (×) or a signed difference (+0.19, Δ −0.02) may also be
    the ratio or difference of two figures quoted in the same unit or table, or of two numbers of the JSON."""
    bad = []
    table: list[float] = []
    for lineno, body, refs in units(text):
        table = table + [v for _, v, *_ in figures(body)] if body.startswith("|") else []
        if not refs:
            continue
        files = tuple(dict.fromkeys(f for r in refs for f in expand(r)))
        if not files:
            if any(re.search(r"\.jsonl?$|/$|\*$", r.rstrip(".,;:)…")) for r in refs):
                bad.append((lineno, refs[0], "names no existing .json/.jsonl file"))
            continue
        nums = set().union(*(json_numbers(f)[0] for f in files))
        strings = "\n".join(json_numbers(f)[1] for f in files)
        quoted = figures(body)
        operands = (table if body.startswith("|") else []) + [v for _, v, *_ in quoted]
        for shown, value, decimals, unit, signed in quoted:
            if _close(value, decimals, nums, unit) \
                    or re.search(rf"(?<![\d.]){re.escape(shown.lstrip('+'))}(?![\d])", strings):
                continue
            kind = "ratio" if unit in ("×", "x") else "gain%" if unit == "%" else "difference" if signed else ""
            target = abs(value) if kind == "difference" else value
            if kind and any(_near(target, decimals, pool) for pool in (_pairs(operands, kind), _derived(files, kind))):
                continue
            bad.append((lineno, shown, body[:100]))
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_figures_are_in_their_json(doc):
    name = str(doc.relative_to(ROOT))
    bad = {(name, shown) for _, shown, _ in untraced_figures(doc.read_text(encoding="utf-8"))}
    assert sorted(bad - UNTRACED.keys()) == []
    assert sorted(k for k in UNTRACED if k[0] == name and k not in bad) == [], "no longer needed in UNTRACED"

def test_the_figure_checker_sees_a_changed_figure():
    """Real figures of a real JSON pass at the rounding shown; a changed one, a wrong ratio and a missing file
    do not; counts, versions, years and code are not figures."""
    ok = ("With the tiny model (`bench/results/judge_service_tiny.json`), 8 clients, torch 2.13, December 2026:\n"
          "50.8 requests/s against 48.4 requests/s (1.05×, 5%), p50 0.159 s, `--max-batch 64`.\n")
    assert untraced_figures(ok) == []
    bad = ok.replace("50.8", "51.8").replace("1.05×", "1.15×")
    assert [shown for _, shown, _ in untraced_figures(bad)] == ["51.8", "1.15×"[:-1]]
    rows = ("Speed (`bench/results/judge_service_tiny.json`):\n\n| mode | requests/s |\n|---|---|\n"
            "| micro-batched | 50.8 |\n| one request per call | 48.9 |\n")
    assert [shown for _, shown, _ in untraced_figures(rows)] == ["48.9"]
    assert untraced_figures("See `bench/results/no_such_bench.json`: 1.5 s.")[0][2].startswith("names no existing")
