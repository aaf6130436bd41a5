"""The example recipes and their data, installed as the package ``minirft.recipes`` (see pyproject.toml)."""
