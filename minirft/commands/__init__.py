"""The click commands of `minirft`, one module each; :mod:`minirft.cli` loads them lazily."""
