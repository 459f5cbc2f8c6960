"""Development tools for azjobs (not part of the installed package)."""
