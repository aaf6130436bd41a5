"""`minirft report RUN_DIR`: one self-contained HTML page about a run, to read or to share.

Everything comes from the run dir (``events.jsonl``, ``eval.json`` when ``minirft eval`` was run);
charts are inline SVG drawn here, the styles are inline, and the page loads nothing from anywhere
(no script, no font, no CDN). Sections: summary, reward (mean and its spread across samples), the
judge's criteria and the rule rewards over steps (with first/last-5-step means), KL and completion
length, time per phase (generation / judge / update), detector warnings and other events, the held-out
eval, the best and worst logged samples with the judge's rationales, and every step's numbers.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


from minirft.errors import MinirftError

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]
PHASES = (("generation_s", "generation", "#2563eb"), ("judge_s", "judge", "#ea580c"), ("update_s", "update", "#16a34a"))
WINDOW = 5  # steps averaged for the "first" and "last" columns


# ----------------------------------------------------------------------------------- the run
def load_run(run_dir: Path) -> dict[str, Any]:
    from minirft.events import read_events

    path = run_dir / "events.jsonl"
    if not path.is_file():
        raise MinirftError(f"{run_dir}: not a run dir (no events.jsonl)")
    records = read_events(path)
    starts = [r for r in records if r["type"] == "run_start"]
    if not starts:
        raise MinirftError(f"{path}: no run_start record (is it a minirft event log?)")
    steps: dict[int, dict] = {}
    for r in records:
        if r["type"] == "step":
            steps[int(r["step"])] = r.get("metrics") or {}  # after a resume the later record wins
    ends = [r for r in records if r["type"] == "run_end"]
    eval_path = run_dir / "eval.json"
    evaluation = None
    if eval_path.is_file():
        try:
            evaluation = json.loads(eval_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MinirftError(f"{eval_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    return {
        "run_dir": run_dir, "start": starts[0], "starts": starts, "end": ends[-1] if ends else None,
        "steps": dict(sorted(steps.items())), "samples": [r for r in records if r["type"] == "sample"],
        "events": [r for r in records if r["type"] == "event"], "eval": evaluation,
        "last_time": records[-1].get("time") if records else None,
    }


def series(steps: dict[int, dict], key: str) -> tuple[list[int], list[float | None]]:
    xs = list(steps)
    return xs, [_num(steps[s].get(key)) for s in xs]


def window_mean(values: Sequence[float | None], first: bool) -> float | None:
    vals = [v for v in values if v is not None]
    vals = vals[:WINDOW] if first else vals[-WINDOW:]
    return sum(vals) / len(vals) if vals else None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def fmt(v: Any, digits: int = 3) -> str:
    v = _num(v)
    return "—" if v is None else f"{v:.{digits}f}"


def esc(text: Any) -> str:
    return html.escape("" if text is None else str(text))


# ---------------------------------------------------------------------------------- the charts
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [round(math.floor(lo / step) * step, 10)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick at or above the highest value
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:.3g}"


def line_chart(title: str, lines: list[tuple[str, list[int], list[float | None]]], *,
               band: tuple[list[int], list[float | None], list[float | None]] | None = None,
               width: int = 540, height: int = 220, y_min: float | None = None, y_max: float | None = None) -> str:
    """An inline SVG line chart; None values leave gaps; ``band`` = (xs, low, high) shaded behind."""
    left, right, top, bottom = 52, 12, 40 if (len(lines) > 1 or band) else 26, 30
    pts = [(x, y) for _, xs, ys in lines for x, y in zip(xs, ys) if y is not None]
    if band:
        pts += [(x, y) for x, lo, hi in zip(*band) for y in (lo, hi) if y is not None]
    if not pts:
        return f'<div class="empty">{esc(title)}: no values logged</div>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    lo = min(p[1] for p in pts) if y_min is None else y_min
    hi = max(p[1] for p in pts) if y_max is None else y_max
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    if hi == lo:
        hi = lo + 1
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - lo) / (hi - lo)) * ph

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}">', f'<text x="{left}" y="16" class="ct">{esc(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" class="yt">{_tick_label(t)}</text>')
    for t in nice_ticks(x0, x1, 6):
        if x0 <= t <= x1 and float(t).is_integer():
            out.append(f'<text x="{px(t):.1f}" y="{height - 10}" class="xt">{int(t)}</text>')
    if band:
        xs, lows, highs = band
        upper = [(px(x), py(h)) for x, l, h in zip(xs, lows, highs) if l is not None and h is not None]
        lower = [(px(x), py(l)) for x, l, h in zip(xs, lows, highs) if l is not None and h is not None]
        if upper:
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
            out.append(f'<polygon points="{poly}" class="band"/>')
    for i, (label, xs, ys) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        segment: list[str] = []
        segments = []
        for x, y in zip(xs, ys):
            if y is None:
                if segment:
                    segments.append(segment)
                segment = []
            else:
                segment.append(f"{px(x):.1f},{py(y):.1f}")
        if segment:
            segments.append(segment)
        for seg in segments:
            out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        if len(xs) <= 200:
            for x, y in zip(xs, ys):
                if y is not None:
                    out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{color}">'
                               f'<title>{esc(label)} step {x}: {y:.4f}</title></circle>')
    if len(lines) > 1 or band:
        items = [(label, f'<rect x="{{x}}" y="25" width="10" height="3" fill="{PALETTE[i % len(PALETTE)]}"/>')
                 for i, (label, _, _) in enumerate(lines)]
        if band:
            items.append(("± reward std (spread across the step's samples)",
                          '<rect x="{x}" y="22" width="10" height="8" class="band"/>'))
        out.append(_legend(items, left))
    out.append("</svg>")
    return "".join(out)


def _legend(items: list[tuple[str, str]], left: int) -> str:
    """One row of legend entries under the chart title: (label, swatch SVG with an {x} placeholder)."""
    out, x = [], left
    for label, swatch in items:
        out.append(swatch.format(x=x) + f'<text x="{x + 14}" y="30" class="lg">{esc(label)}</text>')
        x += 24 + int(6.2 * len(label))
    return "".join(out)


def stacked_bars(title: str, xs: list[int], parts: list[tuple[str, str, list[float | None]]], *,
                 width: int = 540, height: int = 220) -> str:
    """Per-step stacked bars (seconds per phase)."""
    left, right, top, bottom = 52, 12, 40, 30
    totals = [sum((p[2][i] or 0.0) for p in parts) for i in range(len(xs))]
    if not xs or max(totals, default=0) <= 0:
        return f'<div class="empty">{esc(title)}: no timings logged</div>'
    ticks = nice_ticks(0, max(totals))
    hi = ticks[-1]
    pw, ph = width - left - right, height - top - bottom
    bw = pw / len(xs)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}">', f'<text x="{left}" y="16" class="ct">{esc(title)}</text>']
    for t in ticks:
        y = top + (1 - t / hi) * ph
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" class="yt">{_tick_label(t)}</text>')
    for i, x in enumerate(xs):
        base = 0.0
        for label, color, values in parts:
            v = values[i] or 0.0
            if v <= 0:
                continue
            y0, y1 = top + (1 - base / hi) * ph, top + (1 - (base + v) / hi) * ph
            out.append(f'<rect x="{left + i * bw + bw * 0.1:.1f}" y="{y1:.1f}" width="{bw * 0.8:.1f}" '
                       f'height="{y0 - y1:.1f}" fill="{color}"><title>step {x} {esc(label)}: {v:.2f} s</title></rect>')
            base += v
    for t in nice_ticks(xs[0], xs[-1], 6):
        if float(t).is_integer() and xs[0] <= t <= xs[-1]:
            i = xs.index(int(t)) if int(t) in xs else None
            if i is not None:
                out.append(f'<text x="{left + (i + 0.5) * bw:.1f}" y="{height - 10}" class="xt">{int(t)}</text>')
    out.append(_legend([(label, f'<rect x="{{x}}" y="22" width="10" height="8" fill="{color}"/>')
                        for label, color, _ in parts], left))
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------------- the page
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2937;
margin:0;background:#f3f4f6}
main{max-width:1140px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 10px;border-bottom:1px solid #d1d5db;padding-bottom:4px}
.sub{color:#6b7280;margin-bottom:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;
padding:8px 14px;min-width:120px}.card b{display:block;font-size:19px}.card span{color:#6b7280;font-size:12px}
.grid2{display:flex;flex-wrap:wrap;gap:12px}.panel{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:6px}
svg.chart{display:block;font-size:11px}.ct{font-weight:600;font-size:12.5px;fill:#111827}
.grid{stroke:#e5e7eb}.yt{text-anchor:end;fill:#6b7280}.xt{text-anchor:middle;fill:#6b7280}.lg{fill:#374151}
.band{fill:#93c5fd;opacity:.45}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f9fafb}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#b45309}.bad{color:#b91c1c}.good{color:#15803d}
.sample{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 12px;margin:8px 0}
.sample pre{white-space:pre-wrap;margin:4px 0;font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#f9fafb;
padding:6px;border-radius:4px}.why{color:#374151;font-style:italic}.empty{color:#6b7280;padding:8px}
details summary{cursor:pointer;color:#2563eb}.lbl{color:#6b7280;font-size:11.5px;margin-top:4px}
"""


def _table(head: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] | None = None) -> str:
    """An HTML table; cells are HTML already. ``numeric``: right-aligned column indexes (default: all but the first)."""
    head = list(head)
    right = set(range(1, len(head)) if numeric is None else numeric)
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="n"' if i in right else ""
            cells.append(f"<td{cls}>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _names(steps: dict[int, dict], prefix: str) -> list[str]:
    seen: dict[str, None] = {}
    for m in steps.values():
        for k in m:
            if k.startswith(prefix):
                seen[k[len(prefix):]] = None
    return list(seen)


def _rates_section(steps: dict[int, dict], prefix: str, title: str, what: str) -> str:
    names = _names(steps, prefix)
    if not names:
        return ""
    lines = [(n, *series(steps, prefix + n)) for n in names]
    chart = line_chart(title, lines, y_min=0.0 if all(min((v for v in ys if v is not None), default=0) >= 0
                                                     for _, _, ys in lines) else None)
    rows = []
    for n, _, ys in lines:
        a, b = window_mean(ys, True), window_mean(ys, False)
        change = "—" if a is None or b is None else f"{b - a:+.3f}"
        rows.append([esc(n), fmt(a), fmt(b), change])
    table = _table([what, f"first {WINDOW} steps", f"last {WINDOW} steps", "change"], rows)
    return f'<div class="grid2"><div class="panel">{chart}</div><div>{table}</div></div>'


def _sample_html(s: dict, label: str) -> str:
    crit = ", ".join(f"{esc(k)} {fmt(v)}" for k, v in (s.get("criteria") or {}).items())
    rules = ", ".join(f"{esc(k)} {fmt(v)}" for k, v in (s.get("rewards") or {}).items())
    why = s.get("rationale")
    per = s.get("criterion_rationales") or {}
    why_html = f'<div class="why">judge: {esc(why)}</div>' if why else ""
    why_html += "".join(f'<div class="why">{esc(k)}: {esc(v)}</div>' for k, v in per.items() if v)
    if s.get("judge_error"):
        why_html += f'<div class="bad">judge error: {esc(s["judge_error"])}</div>'
    return (f'<div class="sample"><b>{esc(label)}</b> — step {esc(s.get("step"))}, reward <b>{fmt(s.get("reward"), 4)}</b>, '
            f'advantage {fmt(s.get("advantage"))}<br>criteria: {crit or "—"}; rules: {rules or "—"}'
            f'<div class="lbl">prompt</div><pre>{esc(s.get("prompt"))}</pre>'
            f'<div class="lbl">completion</div><pre>{esc(s.get("completion"))}</pre>{why_html}</div>')


def _change(m: dict) -> str:
    """``base → tuned, Δ [lo, hi]`` of one paired measure."""
    lo, hi = (m.get("delta_ci95") or [None, None])[:2]
    delta = "—" if _num(m.get("delta")) is None else f"{m['delta']:+.3f}"
    return f"{fmt(m.get('base'))} → {fmt(m.get('trained'))}, Δ {delta} [{fmt(lo)}, {fmt(hi)}]"


def _sets_table(sets: dict) -> str:
    """Every held-out set side by side (in-distribution and shifted): each rule check's base → tuned with
    its paired change, and the judged win rate."""
    names = list(sets)
    checks = list(dict.fromkeys(k for rep in sets.values() for k in (rep.get("measures") or {})))
    rows = [["prompts"] + [esc(sets[n].get("n")) for n in names]]
    for check in checks:
        rows.append([esc(check)] + [_change(sets[n]["measures"][check]) if check in (sets[n].get("measures") or {})
                                    else "—" for n in names])
    wins = []
    for n in names:
        lo, hi = (sets[n].get("win_rate_ci95") or [None, None])[:2]
        wins.append(f"{fmt(sets[n].get('win_rate'))} [{fmt(lo)}, {fmt(hi)}]")
    rows.append(["judged win rate"] + wins)
    return ('<p>Every held-out set side by side (base → tuned, paired change and its 95% interval); the details '
            f'below are set <b>{esc(names[0])}</b>\'s.</p>' + _table(["measure"] + names, rows))


def _eval_section(ev: dict | None) -> str:
    if not ev:
        return ('<p class="empty">No held-out evaluation in this run dir (run <code>minirft eval RUN_DIR</code> '
                "to add one).</p>")
    parts = [_sets_table(ev["sets"])] if len(ev.get("sets") or {}) > 1 else []
    if ev.get("win_rate") is not None:
        lo, hi = (ev.get("win_rate_ci95") or [None, None])[:2]
        judge = ev.get("judge") or {}
        parts.append(f'<p>Tuned vs base on <b>{esc(ev.get("n"))}</b> held-out prompts ({esc(ev.get("data"))}), '
                     f'judged by {esc(judge.get("model"))}: win rate <b>{fmt(ev["win_rate"])}</b> '
                     f'(95% CI [{fmt(lo)}, {fmt(hi)}]), wins {esc(ev.get("wins"))} / losses {esc(ev.get("losses"))}.</p>')
    rows = []
    for name, m in (ev.get("measures") or {}).items():
        lo, hi = (m.get("delta_ci95") or [None, None])[:2]
        rows.append([esc(name), fmt(m.get("base")), fmt(m.get("trained")),
                     "—" if m.get("delta") is None else f"{m['delta']:+.3f}", f"[{fmt(lo)}, {fmt(hi)}]"])
    if rows:
        parts.append(_table(["rule check (held-out)", "base", "tuned", "change", "95% CI (paired)"], rows))
    for pair in (ev.get("pairs") or [])[:3]:
        parts.append(f'<div class="sample">P(tuned better) <b>{fmt(pair.get("p_tuned"))}</b><pre>{esc(pair.get("prompt"))}</pre>'
                     f'<div>tuned:</div><pre>{esc(pair.get("tuned"))}</pre><div>base:</div><pre>{esc(pair.get("base"))}</pre>'
                     + (f'<div class="why">judge: {esc(pair["rationale"])}</div>' if pair.get("rationale") else "")
                     + "</div>")
    return "".join(parts)


def render(run: dict[str, Any]) -> str:
    start, end, steps = run["start"], run["end"], run["steps"]
    recipe = start.get("recipe") or {}
    name = start.get("run_name") or Path(run["run_dir"]).name
    total = start.get("total_steps")
    done = max(steps) if steps else 0
    status = (end or {}).get("status") or "running (or killed)"
    t_end = (end or {}).get("time") or run.get("last_time")
    wall = (t_end - start["time"]) if t_end and start.get("time") else None
    xs, reward = series(steps, "reward")
    _, std = series(steps, "reward_std")
    lows = [None if r is None or s is None else r - s for r, s in zip(reward, std)]
    highs = [None if r is None or s is None else r + s for r, s in zip(reward, std)]
    _, kl = series(steps, "kl")
    _, length = series(steps, "completion_length")
    first_r, last_r = window_mean(reward, True), window_mean(reward, False)
    warnings = [e for e in run["events"] if e.get("kind") == "warning"]
    others = [e for e in run["events"] if e.get("kind") in ("nan_skip", "judge_error", "resume")]
    checkpoints = [e for e in run["events"] if e.get("kind") == "checkpoint"]

    def card(value: str, label: str) -> str:
        return f'<div class="card"><b>{value}</b><span>{esc(label)}</span></div>'

    cards = [card(f"{done}/{esc(total)}", "steps"), card(esc(status), "status"),
             card(f"{fmt(first_r)} → {fmt(last_r)}", f"reward, mean of first/last {WINDOW} steps"),
             card(fmt(window_mean(kl, False), 4), f"KL, last {WINDOW} steps"),
             card(fmt(window_mean(length, False), 1), f"completion tokens, last {WINDOW}"),
             card("—" if wall is None else f"{wall / 60:.1f} min", "wall time"),
             card(str(len(warnings)), "detector warnings")]
    if run["eval"] and run["eval"].get("win_rate") is not None:
        cards.append(card(fmt(run["eval"]["win_rate"]), "held-out win rate vs base"))

    phase_rows, phase_parts = [], []
    totals = {key: sum(v for v in series(steps, key)[1] if v is not None) for key, _, _ in PHASES}
    step_total = sum(v for v in series(steps, "step_s")[1] if v is not None)
    grand = step_total or sum(totals.values()) or 1.0
    for key, label, color in PHASES:
        vals = series(steps, key)[1]
        n = sum(1 for v in vals if v is not None)
        phase_rows.append([esc(label), f"{totals[key]:.1f}", fmt(totals[key] / n if n else None, 2),
                           f"{100 * totals[key] / grand:.0f}%"])
        phase_parts.append((label, color, vals))
    if step_total:
        other = max(0.0, step_total - sum(totals.values()))
        phase_rows.append(["other (logging, checkpoints)", f"{other:.1f}", fmt(other / max(1, len(steps)), 2),
                           f"{100 * other / grand:.0f}%"])

    warn_rows = [[esc(e.get("step")), esc(e.get("detector") or "—"), esc(e.get("message")), fmt(e.get("value"))]
                 for e in warnings]
    other_rows = [[esc(e.get("step")), esc(e.get("kind")), esc(e.get("message"))] for e in others]
    scored = [s for s in run["samples"] if _num(s.get("reward")) is not None]
    best = sorted(scored, key=lambda s: -s["reward"])[:3]
    worst = [s for s in sorted(scored, key=lambda s: s["reward"]) if s not in best][:3]
    step_keys = [("reward", 4), ("reward_std", 4), ("kl", 5), ("loss", 4), ("entropy", 3), ("completion_length", 1),
                 ("frac_reward_zero_std", 2), ("generation_s", 1), ("judge_s", 1), ("update_s", 1)]
    step_rows = [[str(s)] + [fmt(m.get(k), d) for k, d in step_keys] for s, m in steps.items()]
    judge = recipe.get("judge") or {}
    sub = (f'policy {esc(start.get("policy_model") or (recipe.get("policy") or {}).get("model"))} · '
           f'judge {esc(start.get("judge_model") or judge.get("model") or "none")} · device {esc(start.get("device"))} · '
           f'started {time.strftime("%Y-%m-%d %H:%M", time.gmtime(start.get("time", 0)))} UTC · '
           f'{len(checkpoints)} checkpoints · {esc(len(run["starts"]) - 1)} resumes')

    body = f"""
<h1>{esc(name)}</h1><div class="sub">{sub}</div>
<div class="cards">{''.join(cards)}</div>
<h2>Reward</h2>
<div class="grid2"><div class="panel">{line_chart("reward (mean over the step's samples)", [("reward", xs, reward)], band=(xs, lows, highs))}</div>
<div class="panel">{line_chart("reward std within the step", [("reward_std", xs, std)], y_min=0.0)}</div></div>
<h2>Judge criteria (mean P(pass))</h2>
{_rates_section(steps, "criteria/", "criteria: mean P(pass) per step", "criterion") or '<p class="empty">No judge criteria logged.</p>'}
<h2>Rule rewards and the judge's share</h2>
{_rates_section(steps, "rewards/", "reward components per step", "reward") or '<p class="empty">No reward components logged.</p>'}
<h2>KL and completion length</h2>
<div class="grid2"><div class="panel">{line_chart("KL to the base (k3, per token)", [("kl", xs, kl)], y_min=0.0)}</div>
<div class="panel">{line_chart("completion length (tokens)", [("completion_length", xs, length)], y_min=0.0)}</div></div>
<h2>Time per phase</h2>
<div class="grid2"><div class="panel">{stacked_bars("seconds per step", xs, phase_parts)}</div>
<div>{_table(["phase", "total s", "mean s / step", "share"], phase_rows)}</div></div>
<h2>Detector warnings</h2>
{_table(["step", "detector", "message", "value"], warn_rows, numeric=(0, 3)) if warn_rows else '<p class="good">No detector warnings.</p>'}
{('<h3>Other events</h3>' + _table(["step", "kind", "message"], other_rows, numeric=(0,))) if other_rows else ''}
<h2>Held-out evaluation</h2>
{_eval_section(run["eval"])}
<h2>Best and worst logged samples</h2>
{''.join(_sample_html(s, "best") for s in best)}{''.join(_sample_html(s, "worst") for s in worst)}
{'' if scored else '<p class="empty">No scored samples logged.</p>'}
<h2>Every step</h2>
<details><summary>{len(steps)} steps</summary>
{_table(["step"] + [k for k, _ in step_keys], step_rows, numeric=range(len(step_keys) + 1))}</details>
"""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>minirft report · {esc(name)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><main>{body}</main></body></html>\n")


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    from minirft.atomic import write_text

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report.html"
    if out.parent.resolve() == run_dir.resolve():
        from minirft.rundir import guard

        guard(run_dir, run_dir / out.name)  # report.html in the run dir: never written through a link
    write_text(out, render(load_run(run_dir)))
    return out
