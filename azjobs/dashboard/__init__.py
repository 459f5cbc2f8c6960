"""The azjobs dashboard: queues and their depths, the poison browser, and job status (``pip install azjobs[dashboard]``).

- ``create_app(...)``: the ASGI (Starlette) app; serve it with any ASGI server.
- ``azjobs dashboard --port 8080``: serve it locally (``azjobs.cli.dashboard``).
- ``blueprint(...)``: an HTTP-triggered Azure Function serving it from the function app
  (``azjobs.dashboard.functions``), behind the host's admin key or Entra ID sign-in.

Reading is open to whoever reaches it; requeue and purge need the admin key (see ``auth``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["blueprint", "create_app"]


def create_app(*args: Any, **kwargs: Any):
    """The dashboard ASGI app; see ``azjobs.dashboard.app.create_app``."""
    from .app import create_app as make

    return make(*args, **kwargs)


def blueprint(*args: Any, **kwargs: Any):
    """An ``azure.functions.Blueprint`` serving the dashboard; see ``azjobs.dashboard.functions.blueprint``."""
    from .functions import blueprint as make

    return make(*args, **kwargs)
