"""What several commands share: the judge they build (a seam tests replace) and stderr progress."""

from __future__ import annotations

import click


def make_judge(cfg):
    """The recipe's judge (tests monkeypatch this to pass a scripted judge)."""
    from minirft.judge import build_judge

    return build_judge(cfg)


def progress(label: str):
    """A progress line on stderr (data goes to stdout)."""
    def update(done: int, total: int) -> None:
        if done == total or done % max(1, total // 50) == 0:
            click.echo(f"\r{label} {done}/{total}", err=True, nl=done == total)
    return update


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"
