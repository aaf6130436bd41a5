"""The live terminal UI (`minirft watch`, `minirft train --tui`).

It only *reads* a run dir's ``events.jsonl`` — never writes, never signals the trainer unless the
user asks to stop a child it started — so one view serves a live run and a finished one alike.

Layout of this package (one job per module):

- ``run_state``: a pure, Textual-free model of a run folded from event records (what the header,
  plots, table and plain output all read).
- ``tailer``: follows the log in a worker thread and posts one coalescing message per burst.
- ``widgets/`` and ``screens/``: the small pieces of the screen; ``app.tcss`` styles them.
- ``app``: the Textual app and :func:`watch`, the entry point ``minirft train --tui`` calls.
- ``plain``: ``--plain`` / ``--json`` output when stdout is not a terminal.
- ``cli``: the ``minirft watch`` command.
"""
