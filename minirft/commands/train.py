"""`minirft train`: a thin command over :func:`minirft.train.loop.train`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from minirft.errors import MinirftError


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("args", nargs=-1)
@click.option("--resume", "resume", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="Continue a run from its last complete checkpoint (its recipe.resolved.yaml is used).")
@click.option("--from-scratch", "from_scratch", is_flag=True,
              help="With --resume: when the run has no usable checkpoint, start it again from step 0 "
                   "(without this, that is an error; on a terminal you are asked).")
@click.option("--tui", is_flag=True, help="Train in a child process and watch it live in the terminal UI.")
@click.option("--overwrite", is_flag=True,
              help="Replace what RUN_DIR (--run-dir) already holds; without it an existing run dir is refused.")
@click.option("--run-dir", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Exact run directory (default: <recipe.run_dir>/<name>-<YYYYmmdd-HHMMSS>).")
@click.option("--report-to", "report_to", default=None, metavar="TRACKERS",
              help="Experiment trackers, comma-separated: tensorboard, mlflow, wandb, trackio, or none "
                   "(sets logging.report_to).")
@click.option("--engine", type=click.Choice(["minirft", "trl"]), default="minirft", show_default=True,
              help="trl: train with TRL's GRPOTrainer (accelerate launch, DeepSpeed, N GPUs; needs minirft[trl]).")
def train_command(args: tuple[str, ...], resume: Path | None, from_scratch: bool, tui: bool,
                  run_dir: Path | None, report_to: str | None, engine: str, overwrite: bool = False) -> None:
    """Train a LoRA adapter with GRPO on RECIPE, with dotted key=value overrides.

    \b
    Examples:
      minirft train recipes/polite.yaml
      minirft train recipes/arithmetic.yaml training.steps=4 generation.group_size=8
      minirft train polite --tui
      minirft train --resume runs/polite-20261123-101500
      minirft train --resume runs/polite-20261123-101500 training.steps=40   # extend a run
      minirft train --resume runs/polite-20261123-101500 --from-scratch      # no usable checkpoint
      minirft train recipes/polite.yaml --report-to tensorboard,mlflow       # also log to trackers
      minirft train polite --engine trl --run-dir runs/polite-trl
      accelerate launch --num_processes 2 -m minirft train polite --engine trl --run-dir runs/p2

    Progress goes to stderr, one line per step; everything else to RUN_DIR/events.jsonl.
    """
    from minirft.preflight import check_recipe
    from minirft.recipe import find_recipe, load_recipe

    recipe_arg, overrides = None, list(args)
    if args and "=" not in args[0]:
        recipe_arg, overrides = args[0], list(args[1:])
    if from_scratch and resume is None:
        raise click.UsageError("--from-scratch goes with --resume RUN_DIR")
    if overwrite and resume is not None:
        raise click.UsageError("--overwrite starts a new run; --resume continues one: give one of them")
    if report_to is not None:
        overrides.append(f"logging.report_to={report_to}")
    if resume is not None:
        if not (resume / "recipe.resolved.yaml").is_file():
            raise MinirftError(f"{resume}: not a run directory (no recipe.resolved.yaml)")
        if recipe_arg is not None:
            raise MinirftError("--resume takes its recipe from the run dir; give only key=value overrides")
        recipe = load_recipe(resume / "recipe.resolved.yaml", overrides)
        target = resume
    else:
        if recipe_arg is None:
            raise click.UsageError("missing RECIPE (a recipe file or the name of a shipped recipe)")
        recipe = load_recipe(find_recipe(recipe_arg), overrides)
        from minirft.train.loop import new_run_dir

        target = run_dir if run_dir is not None else new_run_dir(recipe)
    argv = ["minirft", "train", *args]
    argv += ["--resume", str(resume)] if resume is not None else ["--run-dir", str(target)]
    argv += ["--from-scratch"] if from_scratch else []
    argv += ["--overwrite"] if overwrite else []

    if engine == "trl":
        _train_trl(recipe, target, resume, tui, argv, explicit_dir=run_dir is not None, overwrite=overwrite)
        return
    if tui:
        check_recipe(recipe)  # a bad recipe is an error here, on the terminal, not in the child's log
        if resume is None:
            from minirft.rundir import check_fresh

            check_fresh(target, overwrite=overwrite)  # refused here, not in the child's log
        _train_with_tui(recipe_arg, overrides, resume, target, from_scratch, overwrite)
        return

    from minirft.train.loop import _Stop, default_threads, resume_hint, train

    default_threads()
    # On a terminal, a resume with no usable checkpoint asks before starting over (else it is an error).
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    confirm = (lambda question: click.confirm(question, default=False, err=True)) if interactive else None
    try:
        train(recipe, target, resume=resume is not None, argv=argv, from_scratch=from_scratch, confirm=confirm,
              overwrite=overwrite)
    except (KeyboardInterrupt, _Stop):  # Ctrl-C, or SIGTERM (the TUI's "stop training")
        click.echo(f"stopped; {resume_hint(target)}", err=True)
        sys.exit(130)
    click.echo(f"done: adapter in {target / 'adapter'}", err=True)


def _train_trl(recipe, target: Path, resume: Path | None, tui: bool, argv: list[str], *, explicit_dir: bool,
               overwrite: bool = False) -> None:
    if resume is not None or tui:
        raise MinirftError("--engine trl: --resume and --tui are minirft-engine options (watch a TRL run with "
                           "`minirft watch RUN_DIR`)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not explicit_dir:
        raise MinirftError("--engine trl under several processes needs --run-dir DIR (the same for every process)")
    from minirft.train.trl_engine import train_trl

    from minirft import rundir

    main = os.environ.get("RANK", "0") == "0"  # under accelerate/torchrun only rank 0 talks
    lock = None
    if main:  # rank 0 writes the run dir: the same rules as the minirft engine (one writer, never twice)
        rundir.check_fresh(target, overwrite=overwrite)
        lock = rundir.RunLock(target, "minirft train --engine trl").acquire()
        if overwrite:
            rundir.clear(target)
        click.echo(f"run dir: {target}", err=True)
    try:
        train_trl(recipe, target, argv=argv, quiet=not main)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        sys.exit(130)
    finally:
        if lock is not None:
            lock.forget_dir()
    if main:
        click.echo(f"done: adapter in {target / 'adapter'}", err=True)


def _train_with_tui(recipe_arg: str | None, overrides: list[str], resume: Path | None, target: Path,
                    from_scratch: bool = False, overwrite: bool = False) -> None:
    """Training runs in a child (so quitting the viewer never kills it by accident); the TUI watches."""
    try:
        from minirft.tui.app import watch
    except ImportError as exc:
        raise MinirftError(f"--tui: the terminal UI is not available ({exc})") from None
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "minirft", "train"]
    cmd += ["--resume", str(resume)] if resume is not None else [recipe_arg or "", "--run-dir", str(target)]
    cmd += ["--from-scratch"] if from_scratch else []
    cmd += ["--overwrite"] if overwrite else []
    cmd += overrides
    from minirft.rundir import open_append

    log = os.fdopen(open_append(target / "train.log", target), "ab")
    # Its own session: a run left going in the background survives the terminal closing (no SIGHUP).
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    watch(target, child)
