"""Modal screens: the full sample, the help page, the quit question."""
