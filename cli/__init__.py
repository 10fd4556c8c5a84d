"""pkbs.cli."""
