"""A plain (non-editable) install carries every package and the example recipes with their data."""

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_tree_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "minirft").rglob("__init__.py")}
    found |= {".".join(p.parent.relative_to(ROOT / "kernels").parts) for p in (ROOT / "kernels").rglob("__init__.py")}
    found.add("minirft.recipes")
    assert found == listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """minirft built as a wheel and installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("minirft-*.whl")
    target = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
        names = set(zf.namelist())
    return target, names


def test_the_wheel_holds_the_recipes_and_their_data(installed):
    _, names = installed
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        assert f"minirft/recipes/{recipe.name}" in names
    for data in (ROOT / "recipes" / "data").glob("*.jsonl"):
        assert f"minirft/recipes/data/{data.name}" in names
    assert "minirft/tui/app.tcss" in names and "minirft_kernels/ops/grpo_loss.py" in names


def test_recipes_list_copy_and_validate_from_a_plain_install_in_an_empty_folder(installed, tmp_path):
    site, _ = installed
    env = dict(os.environ, PYTHONPATH=str(site))  # the installed copy, not this checkout
    run = lambda *args: subprocess.run([sys.executable, "-m", "minirft", *args], cwd=tmp_path, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    where = subprocess.run([sys.executable, "-c", "import minirft; print(minirft.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(site))
    listed = run("recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} >= {"polite", "arithmetic", "howto"}
    copied = run("recipes", "copy", "polite", "my.yaml")
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "my.yaml").is_file() and (tmp_path / "data" / "everyday-questions.jsonl").is_file()
    assert run("recipes", "validate", "my.yaml").returncode == 0
    assert run("recipes", "validate", "polite").returncode == 0  # the shipped one, by name
    again = run("recipes", "copy", "polite", "my.yaml")
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    unknown = run("recipes", "copy", "nope", "x.yaml")
    assert unknown.returncode == 1 and "no shipped recipe named 'nope'" in unknown.stderr
