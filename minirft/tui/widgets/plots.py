"""The four charts: mean reward with its spread (and the in-run held-out checks beside it), pass rates,
KL and loss, completion length.

Each is a textual-plotext widget redrawn from a RunState on demand (the app decides when), with a
vertical marker at the step being viewed.
"""

from __future__ import annotations

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from minirft.tui.run_state import RunState


def thin(xs: list[int], ys: list[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points: means of consecutive buckets of equal size.

    A terminal chart is ~2 braille dots per column wide, so thousands of steps cannot be seen
    anyway, and plotext's cost grows with the points drawn (5,000 steps × 4 charts took ~1 s).
    """
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    size = -(-n // max_points)  # ceil
    bx, by = [], []
    for i in range(0, n, size):
        chunk_x, chunk_y = xs[i:i + size], ys[i:i + size]
        bx.append(sum(chunk_x) / len(chunk_x))
        by.append(sum(chunk_y) / len(chunk_y))
    return bx, by


class MetricPlot(PlotextPlot):
    """A chart of one view of the run; ``kind`` picks which."""

    TITLES = {
        "reward": "reward: mean ± std",
        "rates": "pass rates (rewards/ and criteria/)",
        "kl_loss": "kl (left) · loss (right)",
        "length": "completion length (tokens)",
    }

    def __init__(self, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self._version = 0  # bumped by draw(); the rendered chart is reused until data or size change
        self._cached: tuple[tuple, RenderResult] | None = None

    def render(self) -> RenderResult:
        # Building a plotext chart is the costliest thing on screen; Textual re-renders widgets
        # on unrelated changes (a modal opening, the header ticking), so keep the last build.
        key = (self._version, self.size, self.app.theme)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, super().render())
        return self._cached[1]

    def _series(self, state: RunState, name: str) -> tuple[list[float], list[float]]:
        xs, ys = state.series(name)
        return thin(xs, ys, max(40, 2 * (self.size.width or 200)))

    def draw(self, state: RunState, view_step: int | None) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.TITLES[self.kind])
        getattr(self, f"_draw_{self.kind}")(state)
        if view_step is not None and state.metrics:
            plt.vline(view_step, "gray")
        self._version += 1
        self.refresh()

    def _draw_reward(self, state: RunState) -> None:
        xs, mean = state.series("reward")
        if not xs:
            return
        std = dict(zip(*state.series("reward_std")))
        limit = max(40, 2 * (self.size.width or 200))
        _, lo = thin(xs, [m - std.get(x, 0.0) for x, m in zip(xs, mean)], limit)
        _, hi = thin(xs, [m + std.get(x, 0.0) for x, m in zip(xs, mean)], limit)
        xs, mean = thin(xs, mean, limit)
        self.plt.plot(xs, hi, color="gray", marker="braille", label="±std")
        self.plt.plot(xs, lo, color="gray", marker="braille")
        self.plt.plot(xs, mean, color="cyan", marker="braille", label="mean")
        heldout = state.heldout_series()  # training.eval_every: one point per check and measure
        if heldout:
            self.plt.title(f"{self.TITLES['reward']} · held-out checks")
        for name, (hx, hy) in heldout.items():
            self.plt.plot(hx, hy, marker="dot", label=f"held-out {name}")

    def _draw_rates(self, state: RunState) -> None:
        for key in state.metric_names("rewards/") + state.metric_names("criteria/"):
            xs, ys = self._series(state, key)
            if xs:
                self.plt.plot(xs, ys, marker="braille", label=key.split("/", 1)[1])
        self.plt.ylim(0, 1)

    def _draw_kl_loss(self, state: RunState) -> None:
        xs, ys = self._series(state, "kl")
        if xs:
            self.plt.plot(xs, ys, color="magenta", marker="braille", label="kl")
        xs, ys = self._series(state, "loss")
        if xs:
            self.plt.plot(xs, ys, color="yellow", marker="braille", label="loss", yside="right")

    def _draw_length(self, state: RunState) -> None:
        xs, ys = self._series(state, "completion_length")
        if xs:
            self.plt.plot(xs, ys, color="green", marker="braille")
