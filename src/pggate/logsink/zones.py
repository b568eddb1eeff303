"""``log_timezone``: a time zone name as PostgreSQL's check_log_timezone accepts it.

PostgreSQL's pg_tzset loads a zone of its time zone database by name, in any case
(pg_open_tzfile matches file names case-insensitively), and check_log_timezone refuses one that
uses leap seconds (``right/...``) with ``time zone "%s" appears to use leap seconds``. pggate
reads the same IANA database through :mod:`zoneinfo` (the system's tzdata, else the ``tzdata``
package). pg_tzset also accepts a POSIX-style specification such as ``<+03>-3`` or
``EST5EDT4,M3.2.0,M11.1.0`` when no file has that name; :mod:`zoneinfo` cannot read those, so
pggate refuses them, saying so.
"""

from __future__ import annotations

import functools
import re
import zoneinfo

# tzparse's shape: a name of 3+ letters or <quoted>, then a UTC offset.
_POSIX_SPEC = re.compile(r"(?:<[^>]+>|[A-Za-z]{3,})[+-]?[0-9]")


class ZoneRefused(Exception):
    """A ``log_timezone`` value pggate does not accept: ``message`` replaces PostgreSQL's
    generic ``invalid value for parameter`` when PostgreSQL has a message of its own."""

    def __init__(self, message: str | None = None, detail: str | None = None) -> None:
        super().__init__(message or "")
        self.message = message
        self.detail = detail


@functools.cache
def _names_by_folded_case() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def _load(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # unknown, not a zone file, or not a key at all
        return None


def find_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone ``log_timezone = name`` selects; raises :class:`ZoneRefused`."""
    if name.lower().startswith("right/"):
        raise ZoneRefused(
            f'time zone "{name}" appears to use leap seconds',
            "PostgreSQL does not support leap seconds.",
        )
    zone = _load(name) if name else None
    if zone is None:
        canonical = _names_by_folded_case().get(name.lower())
        zone = _load(canonical) if canonical is not None else None
    if zone is not None:
        return zone
    if _POSIX_SPEC.match(name):
        raise ZoneRefused(
            None,
            "pggate accepts time zone names of the IANA time zone database only, not "
            'POSIX-style specifications; "Etc/GMT-3", for example, is UTC+3.',
        )
    raise ZoneRefused()
