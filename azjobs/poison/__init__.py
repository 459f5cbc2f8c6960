"""Poison tooling: reading, replaying and purging ``<queue>-poison`` (``azjobs poison``, the dashboard)."""
