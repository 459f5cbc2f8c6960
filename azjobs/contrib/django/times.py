"""Times as Django expects them: aware when ``USE_TZ`` is on, naive in the project's time zone when off."""

from __future__ import annotations

from datetime import datetime


def to_django(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    from django.conf import settings
    from django.utils import timezone

    if settings.USE_TZ:
        return moment
    return timezone.make_naive(moment, timezone.get_default_timezone())


def now() -> datetime:
    from django.utils import timezone

    return timezone.now()
