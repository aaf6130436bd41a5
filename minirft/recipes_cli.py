"""`minirft recipes list|show|validate`: look at and check recipes without loading any model."""

from __future__ import annotations

import click

from minirft.recipe import dump_recipe, find_recipe, load_recipe, shipped_recipes_dir


@click.group("recipes")
def recipes_group() -> None:
    """List, show and validate recipes (no model is loaded).

    \b
    Examples:
      minirft recipes list
      minirft recipes show polite
      minirft recipes validate recipes/*.yaml
      minirft recipes validate recipes/polite.yaml training.steps=4 judge.mode=preference
    """


@recipes_group.command("list")
def list_recipes() -> None:
    """The example recipes shipped in recipes/."""
    folder = shipped_recipes_dir()
    files = sorted(folder.glob("*.yaml"))
    if not files:
        click.echo(f"no recipes in {folder}", err=True)
        return
    for f in files:
        recipe = load_recipe(f)
        mode = recipe.judge.mode if recipe.judge else "rules only"
        click.echo(f"{f.stem:<20} {mode:<11} {recipe.description}")


@recipes_group.command("show")
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
def show_recipe(recipe: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved recipe (every default spelled out) after KEY=VALUE overrides.

    \b
    Example:
      minirft recipes show polite training.steps=4
    """
    click.echo(dump_recipe(load_recipe(find_recipe(recipe), overrides)), nl=False)


@recipes_group.command("validate")
@click.argument("recipes", nargs=-1, required=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override applied to each recipe.")
def validate_recipes(recipes: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check recipe files against the schema, and their data files, without loading models.

    Arguments containing '=' are overrides applied to every recipe given.

    \b
    Examples:
      minirft recipes validate recipes/*.yaml
      minirft recipes validate recipes/polite.yaml training.steps=4
    """
    from minirft.data import load_prompts
    from minirft.errors import MinirftError

    files = [r for r in recipes if "=" not in r]
    overrides = tuple(r for r in recipes if "=" in r) + overrides
    if not files:
        raise click.UsageError("give at least one recipe file")
    failed = 0
    for name in files:
        try:
            recipe = load_recipe(find_recipe(name), overrides)
            load_prompts(recipe.resolve_path(recipe.data.path), recipe.data.columns)
            if recipe.data.eval_path:
                load_prompts(recipe.resolve_path(recipe.data.eval_path), recipe.data.columns)
        except MinirftError as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
            continue
        click.echo(f"ok  {name}")
    if failed:
        raise SystemExit(1)
