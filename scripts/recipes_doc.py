"""The recipe schema reference of docs/recipes.md, generated from the pydantic models in minirft/recipe.py.

Every key of a recipe, section by section: its type, default, bounds, and the comments written above it
in the model's source (the class docstring heads its section). The block between the two markers of
docs/recipes.md is this script's output; tests/test_docs.py checks the committed file equals it.

    python scripts/recipes_doc.py            # rewrite the block in docs/recipes.md
    python scripts/recipes_doc.py --check    # exit 1 when docs/recipes.md is out of date
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import textwrap
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recipes.md"
BEGIN = "<!-- recipe schema: python scripts/recipes_doc.py -->"
END = "<!-- end recipe schema -->"


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines right above its assignment, and a comment at the end of its line."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    out = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above, i = [], stmt.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        end = lines[stmt.end_lineno - 1]
        tail = end.split("  # ", 1)[1].strip() if "  # " in end else ""
        out[stmt.target.id] = " ".join(above + ([tail] if tail else []))
    return out


def _sections(ann: typing.Any) -> list[type[BaseModel]]:
    """The recipe sections (pydantic models) a field's type holds, in order."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    found = []
    for a in typing.get_args(ann):
        found += [s for s in _sections(a) if s not in found]
    return found


def _type(ann: typing.Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" if isinstance(a, str) else f"`{a}`" for a in typing.get_args(ann))
    if origin is typing.Annotated:
        return _type(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in typing.get_args(ann))
    if origin is list:
        return f"list of {_type(typing.get_args(ann)[0])}"
    if origin is dict:
        k, v = typing.get_args(ann)
        return f"mapping {_type(k)} → {_type(v)}"
    if ann is type(None):
        return "`null`"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    return getattr(ann, "__name__", str(ann))


def _default(field: typing.Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default)}`" if not isinstance(field.default, Path) else f"`{field.default}`"


def _bounds(field: typing.Any) -> str:
    marks = [(annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"),
             (annotated_types.Lt, "lt", "<")]
    out = []
    for m in field.metadata:
        out += [f"{sign} {getattr(m, attr)}" for kind, attr, sign in marks if isinstance(m, kind)]
        if getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return ", ".join(out)


def _cell(text: str) -> str:
    """A table cell: pipes escaped (the type column's alternatives are escaped already)."""
    return text.replace("\\|", "\0").replace("|", "\\|").replace("\0", "\\|").replace("\n", " ")


def render() -> str:
    from minirft.recipe import Recipe

    order, paths = [], {}  # every section, depth first, and every key path it sits at

    def visit(model: type[BaseModel], path: str) -> None:
        paths.setdefault(model, []).append(path)
        if model in order:
            return
        order.append(model)
        for name, field in model.model_fields.items():
            many = list in (typing.get_origin(field.annotation),
                            *(typing.get_origin(a) for a in typing.get_args(field.annotation)))
            for sub in _sections(field.annotation):
                visit(sub, f"{path}{'.' if path else ''}{name}{'[]' if many else ''}")

    visit(Recipe, "")
    blocks = []
    for model in order:
        comments = _comments(model)
        doc = inspect.cleandoc(model.__doc__) if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
        where = " and ".join(f"`{p}`" for p in paths[model]) if paths[model] != [""] else "the recipe"
        blocks += [f"### {model.__name__}", "", f"Keys of {where}.", ""]
        if doc:
            blocks += [doc.replace("``", "`"), ""]
        blocks += ["| key | type | default | bounds | what it does |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            cells = [f"`{name}`", _type(field.annotation), _default(field), _bounds(field), comments.get(name, "")]
            blocks.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        blocks.append("")
    return "\n".join([BEGIN, *blocks]).rstrip("\n") + "\n" + END


def render_docs() -> str:
    """docs/recipes.md with its schema block re-rendered."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/recipes.md is out of date")
    args = ap.parse_args(argv)
    new = render_docs()
    if args.check:
        if DOC.read_text(encoding="utf-8") != new:
            print(f"Error: {DOC.relative_to(ROOT)}: the schema block is out of date; run python scripts/recipes_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
