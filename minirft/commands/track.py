"""`minirft track`: a finished run's log sent to experiment trackers (minirft.trackers)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("track", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--report-to", "report_to", required=True, metavar="TRACKERS",
              help="Comma-separated: tensorboard, mlflow, wandb, trackio.")
@click.option("--project", default="minirft", show_default=True,
              help="W&B / Trackio project, MLflow experiment.")
@click.option("-v", "--verbose", is_flag=True, help="Show the trackers' own output.")
def track_command(run_dir: Path, report_to: str, project: str, verbose: bool) -> None:
    """Send a run's events.jsonl to experiment trackers, after the fact (the same metrics, sample
    tables and warnings that `logging.report_to` writes during training).

    \b
    Examples:
      minirft track runs/polite-20261123-101500 --report-to tensorboard
      tensorboard --logdir runs/polite-20261123-101500/tensorboard
      minirft track runs/polite-20261123-101500 --report-to mlflow,wandb --project polite
    """
    from minirft.trackers import replay

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    n = replay(run_dir, names, project=project, verbose=verbose)
    click.echo(f"{run_dir}: {n} records sent to {', '.join(names)}", err=True)
