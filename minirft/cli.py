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
    "train": "minirft.commands.train:train_command",
    "watch": "minirft.commands.watch:watch_command",
    "label": "minirft.commands.label:label_command",
    "judge": "minirft.commands.judge:judge_command",
    "calibrate": "minirft.commands.calibrate:calibrate_command",
    "eval": "minirft.commands.eval:eval_command",
    "recipes": "minirft.commands.recipes:recipes_group",
    "doctor": "minirft.commands.doctor:doctor_command",
    "track": "minirft.commands.track:track_command",
    "export": "minirft.commands.export:export_command",
    "report": "minirft.commands.report:report_command",
}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is absent
        return False


class MinirftGroup(click.Group):
    """Loads subcommands lazily and turns MinirftError (and the kernels' KernelError) into a one-line
    `Error:` with exit code 1."""

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
        from minirft.quiet import quiet_third_party

        # Before the subcommand's module is imported (click resolves it before this group's callback).
        quiet_third_party(bool(ctx.params.get("verbose")))
        try:
            return super().invoke(ctx)
        except MinirftError as exc:
            raise click.ClickException(str(exc)) from None
        except ValueError as exc:  # the standalone kernel package's KernelError (a bad MINIRFT_KERNELS, …)
            kernels = sys.modules.get("minirft_kernels.errors")  # never imported here: it would pull in torch
            if kernels is not None and isinstance(exc, kernels.KernelError):
                raise click.ClickException(str(exc)) from None
            raise


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=MinirftGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="minirft")
@click.option("-v", "--verbose", is_flag=True,
              help="Show third-party warnings, logs and progress bars (hidden by default).")
def cli(verbose: bool) -> None:
    """Reinforcement fine-tuning with a local LLM judge (GRPO + LoRA, one machine, offline).

    \b
    Examples:
      minirft doctor                              # what this machine can do
      minirft recipes list                        # the example recipes
      minirft recipes validate recipes/polite.yaml training.steps=4
      minirft train recipes/polite.yaml training.steps=4
      minirft judge recipes/polite.yaml --input responses.jsonl --output scored.jsonl
      minirft watch                               # live view of the latest run
      minirft -v train recipes/polite.yaml        # with third-party warnings and progress bars
      minirft report runs/polite-20261123-101500  # one self-contained HTML report of a run
      minirft export runs/polite-20261123-101500 --format gguf --out polite.gguf
    """


def main(argv: list[str] | None = None) -> None:
    from minirft.cuda_memory import configure_allocator

    configure_allocator()  # before torch allocates anything on a GPU (expandable segments, unless user-set)
    try:
        cli.main(args=argv, prog_name="minirft", standalone_mode=True)
    except MinirftError as exc:  # raised outside a subcommand's invoke (e.g. while loading one)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
