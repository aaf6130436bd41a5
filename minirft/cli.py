"""The `minirft` command line: a thin Click layer over the library.

Exit codes: 0 ok, 1 error ("Error: …" on stderr, never a traceback), 2 usage error.
Data goes to stdout, progress to stderr. Each subcommand lives next to the code it drives and is
imported only when used, so `minirft --help` stays fast and never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from minirft import __version__
from minirft.errors import MinirftError

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "train": "minirft.train.cli:train_command",
    "watch": "minirft.tui.cli:watch_command",
    "judge": "minirft.judge.cli:judge_command",
    "calibrate": "minirft.trust.cli:calibrate_command",
    "eval": "minirft.trust.cli:eval_command",
    "recipes": "minirft.recipes_cli:recipes_group",
    "doctor": "minirft.doctor:doctor_command",
    "track": "minirft.trackers:track_command",
    "export": "minirft.export:export_command",
    "report": "minirft.report:report_command",
}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is absent
        return False


class MinirftGroup(click.Group):
    """Loads subcommands lazily and turns MinirftError into a one-line `Error:` with exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = [n for n, t in COMMANDS.items() if _module_exists(t.split(":")[0])]
        return present + sorted(super().list_commands(ctx))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return super().get_command(ctx, name)
        module, _, attr = target.partition(":")
        if not _module_exists(module):
            return None
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MinirftError as exc:
            raise click.ClickException(str(exc)) from None


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=MinirftGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="minirft")
def cli() -> None:
    """Reinforcement fine-tuning with a local LLM judge (GRPO + LoRA, one machine, offline).

    \b
    Examples:
      minirft doctor                              # what this machine can do
      minirft recipes list                        # the example recipes
      minirft recipes validate recipes/polite.yaml training.steps=4
      minirft train recipes/polite.yaml training.steps=4
      minirft judge recipes/polite.yaml --input responses.jsonl --output scored.jsonl
      minirft watch                               # live view of the latest run
      minirft report runs/polite-20261123-101500  # one self-contained HTML report of a run
      minirft export runs/polite-20261123-101500 --format gguf --out polite.gguf
    """


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="minirft", standalone_mode=True)
    except MinirftError as exc:  # raised outside a subcommand's invoke (e.g. while loading one)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
