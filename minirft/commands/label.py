"""`minirft label FILE.jsonl`: the labelling view over a file of judged rows (minirft.tui.label_file)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minirft.errors import MinirftError


@click.command("label", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def label_command(file: Path) -> None:
    """Label a file of judged rows (`minirft judge` output) by hand, to measure or calibrate the judge.

    Writes FILE.labels.jsonl (one line per verdict, appended as you press the keys; a crash loses
    none), which `minirft calibrate RECIPE FILE.labels.jsonl [--fit]` reads.

    \b
    Examples:
      minirft judge recipes/polite.yaml --input responses.jsonl --output scored.jsonl --rationales
      minirft label scored.jsonl                    # writes scored.labels.jsonl
      minirft calibrate recipes/polite.yaml scored.labels.jsonl --fit

    \b
    Keys: 1-9 criterion k pass → fail → none, + / - overall good / bad, c pair view (preference
    rows; then a / b), z undo, u next row worth labelling, p / n page, enter detail, ? help, q quit.
    """
    if not file.is_file():
        raise MinirftError(f"{file}: no such file")
    from minirft.tui.label_file import labels_path_for, make_label_app

    app = make_label_app(file)
    if not sys.stdout.isatty():
        raise MinirftError("minirft label needs a terminal")
    app.run()
    click.echo(f"labels in {labels_path_for(file)} ({len(app.labels)} standing)", err=True)
