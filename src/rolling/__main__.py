"""``python -m rolling`` runs the command line."""

from rolling.cli import entry_point

entry_point()
