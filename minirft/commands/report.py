"""`minirft report`: one self-contained HTML report of a run (minirft.report)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: RUN_DIR/report.html.")
def report_command(run_dir: Path, out: Path | None) -> None:
    """Write one self-contained HTML report of a run (charts inline, nothing loaded from the network).

    \b
    Examples:
      minirft report runs/polite-20261123-101500
      minirft report runs/polite-20261123-101500 --out polite.html
      minirft eval runs/polite-20261123-101500 && minirft report runs/polite-20261123-101500
    """
    from minirft.report import write_report

    path = write_report(run_dir, out)
    click.echo(str(path))
