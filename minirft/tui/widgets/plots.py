"""The four charts: mean reward with its spread, pass rates, KL and loss, completion length.

Each is a textual-plotext widget redrawn from a RunState on demand (the app decides when), with a
vertical marker at the step being viewed.
"""

from __future__ import annotations

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from minirft.tui.run_state import RunState


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
        lo = [m - std.get(x, 0.0) for x, m in zip(xs, mean)]
        hi = [m + std.get(x, 0.0) for x, m in zip(xs, mean)]
        self.plt.plot(xs, hi, color="gray", marker="braille", label="±std")
        self.plt.plot(xs, lo, color="gray", marker="braille")
        self.plt.plot(xs, mean, color="cyan", marker="braille", label="mean")

    def _draw_rates(self, state: RunState) -> None:
        for key in state.metric_names("rewards/") + state.metric_names("criteria/"):
            xs, ys = state.series(key)
            if xs:
                self.plt.plot(xs, ys, marker="braille", label=key.split("/", 1)[1])
        self.plt.ylim(0, 1)

    def _draw_kl_loss(self, state: RunState) -> None:
        xs, ys = state.series("kl")
        if xs:
            self.plt.plot(xs, ys, color="magenta", marker="braille", label="kl")
        xs, ys = state.series("loss")
        if xs:
            self.plt.plot(xs, ys, color="yellow", marker="braille", label="loss", yside="right")

    def _draw_length(self, state: RunState) -> None:
        xs, ys = state.series("completion_length")
        if xs:
            self.plt.plot(xs, ys, color="green", marker="braille")
