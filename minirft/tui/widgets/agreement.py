"""The agreement panel: how often the judge agrees with the person labelling, per criterion.

Hidden until the first label; drawn from :func:`minirft.labels.agreement` over the standing labels (κ and its interval
from :mod:`minirft.agreement`, the same numbers `minirft calibrate` reports).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from minirft.agreement import KappaStats


def _interval(k: KappaStats) -> str:
    return "" if k.lo is None or k.hi is None else f"[{k.lo:+.2f},{k.hi:+.2f}]"


def agreement_text(stats: dict[str, KappaStats], n_labels: int, path_name: str) -> Text:
    t = Text()
    t.append(f"{n_labels} label{'s' * (n_labels != 1)}", style="bold")
    t.append(f" in {path_name}\n", style="dim")
    t.append(f"{'':<8}{'n':>3} {'acc':>4} {'κ':>5}  95% CI\n", style="dim")
    for name, k in stats.items():
        style = "bold" if name == "all" else ""
        kappa = "  —  " if k.kappa != k.kappa else f"{k.kappa:+.2f}"
        t.append(f"{name[:8]:<8}{k.n:>3} {k.accuracy:.2f} {kappa} {_interval(k)}\n", style=style)
    if not stats:
        t.append("no verdict to compare yet\n", style="dim")
    t.rstrip()
    t.no_wrap, t.overflow = True, "ellipsis"
    return t


class AgreementPanel(Static):
    """You vs the judge: labels so far, accuracy, Cohen's κ with its 95% interval."""

    def show(self, stats: dict[str, KappaStats], n_labels: int, path_name: str) -> None:
        self.display = n_labels > 0
        self.update(agreement_text(stats, n_labels, path_name))
