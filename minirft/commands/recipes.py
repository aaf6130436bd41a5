"""`minirft recipes list|show|validate`: look at and check recipes without loading any model."""

from __future__ import annotations

from pathlib import Path

import click

from minirft.recipe import dump_recipe, find_recipe, load_recipe, shipped_recipes_dir


@click.group("recipes")
def recipes_group() -> None:
    """List, show and validate recipes (no model is loaded).

    \b
    Examples:
      minirft recipes list
      minirft recipes copy polite ./my.yaml
      minirft recipes show polite
      minirft recipes validate recipes/*.yaml
      minirft recipes validate recipes/polite.yaml training.steps=4 judge.mode=preference
    """


@recipes_group.command("list")
def list_recipes() -> None:
    """The example recipes shipped with minirft (`minirft recipes copy NAME FILE` for an editable copy)."""
    folder = shipped_recipes_dir()
    files = sorted(folder.glob("*.yaml"))
    if not files:
        click.echo(f"no recipes in {folder}", err=True)
        return
    for f in files:
        recipe = load_recipe(f)
        mode = recipe.judge.mode if recipe.judge else "rules only"
        click.echo(f"{f.stem:<20} {mode:<11} {recipe.description}")


@recipes_group.command("copy")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite DEST (and its data files) if they exist.")
def copy_recipe(name: str, dest: Path, force: bool) -> None:
    """Copy a shipped recipe (and the data files it names) to DEST, to edit and run as your own.

    The data files go next to the copy, keeping the recipe's relative paths, so it runs unchanged.

    \b
    Examples:
      minirft recipes copy polite ./my.yaml
      minirft train ./my.yaml training.steps=4
    """
    import shutil

    from minirft.errors import MinirftError

    source = shipped_recipes_dir() / f"{name}.yaml"
    if not source.is_file():
        names = ", ".join(sorted(f.stem for f in shipped_recipes_dir().glob("*.yaml")))
        raise MinirftError(f"recipes copy: no shipped recipe named '{name}' (shipped: {names})")
    if dest.is_dir():
        dest = dest / source.name
    recipe = load_recipe(source)
    data = [p for p in (recipe.data.path, *recipe.data.held_out().values()) if p]
    targets = [(source, dest)] + [(source.parent / p, dest.parent / p) for p in data if not Path(p).is_absolute()]
    clash = [str(t) for _, t in targets if t.exists()]
    if clash and not force:
        raise MinirftError(f"recipes copy: {', '.join(clash)} already exist(s); pass --force to overwrite")
    for src, dst in targets:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        click.echo(f"wrote {dst}", err=True)


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
    """Check recipe files without loading a model: the schema, every data line, the rewards (regexes,
    python functions) and both models (they resolve and are readable GGUF files / HF folders).

    Arguments containing '=' are overrides applied to every recipe given.

    \b
    Examples:
      minirft recipes validate recipes/*.yaml
      minirft recipes validate recipes/polite.yaml training.steps=4
    """
    from minirft.errors import MinirftError
    from minirft.preflight import check_recipe

    files = [r for r in recipes if "=" not in r]
    overrides = tuple(r for r in recipes if "=" in r) + overrides
    if not files:
        raise click.UsageError("give at least one recipe file")
    failed = 0
    for name in files:
        try:
            check_recipe(load_recipe(find_recipe(name), overrides))
        except MinirftError as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
            continue
        click.echo(f"ok  {name}")
    if failed:
        raise SystemExit(1)
