"""Integrations of azjobs with other frameworks (each in its own subpackage, imported on demand)."""
