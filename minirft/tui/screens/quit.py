"""Asked on quit when this UI started the trainer: stop training, or leave it running?"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitScreen(ModalScreen[str]):
    """Dismisses with ``"stop"``, ``"leave"`` or ``"cancel"``."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop training"),
        Binding("b", "choose('leave')", "Leave running"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def compose(self) -> ComposeResult:
        with Vertical(id="quit"):
            yield Static(f"Training is still running (pid {self.pid}).\nStop it, or leave it running in the "
                         "background and re-attach later with `minirft watch`?")
            with Horizontal(id="quit-buttons"):
                # (not "[s] …": a Button label is markup, where [s] means strikethrough)
                yield Button("Stop training (s)", id="stop", variant="error")
                yield Button("Leave it running (b)", id="leave", variant="primary")
                yield Button("Cancel (c)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
