"""``backend_address``: the one backend today's I/O layer can reach.

It parses and validates like ``backend_target`` and then, fail closed, refuses what the I/O
layer does not act on yet, with a HINT: TLS to a TCP backend (libpq's default
``sslmode=prefer`` on TCP would try TLS first, so a TCP backend must say ``sslmode=disable``),
several hosts, and every keyword beyond ADDRESS_KEYWORDS. On a Unix socket libpq never uses
TLS, and neither does pggate.
"""

from __future__ import annotations

from collections.abc import Mapping

from pggate.conninfo.keywords import LIBPQ_KEYWORDS
from pggate.conninfo.model import BackendAddress
from pggate.conninfo.parse import refuse
from pggate.conninfo.validate import conninfo_values, refuse_not_supported, target_from_values

# The keywords today's I/O layer acts on (sslrootcert, sslcert and sslkey only matter with TLS,
# which is refused on TCP below, so they have no effect where they are accepted).
ADDRESS_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "user",
        "dbname",
        "password",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "connect_timeout",
        "application_name",
    }
)
_BACKEND_HOP_HINT = (
    "TLS to the backend is not implemented yet; on a trusted network write sslmode=disable, "
    "or reach the backend over a Unix socket (host=/path/to/socket/dir)."
)


def backend_address(text: str, defaults: Mapping[str, str] | None = None) -> BackendAddress:
    """Validate a conninfo string and turn it into a BackendAddress, or refuse it."""
    values = conninfo_values(text, defaults)
    refuse_not_supported(values)
    for key in ("host", "hostaddr", "port"):
        if "," in values.value(key, ""):
            raise refuse(
                f'several hosts or ports in "{key}" are not supported yet',
                hint="Name one backend host; multi-host failover is not implemented yet.",
            )
    for keyword in LIBPQ_KEYWORDS:
        if keyword in values and keyword not in ADDRESS_KEYWORDS:
            raise refuse(
                f'connection option "{keyword}" is not supported yet',
                hint="pggate's connection to its backend does not act on it yet.",
            )
    target = target_from_values(values)
    (address,) = target.addresses()
    if not address.is_unix_socket:
        if "sslmode" not in values and target.sslmode == "prefer":
            raise refuse(
                "a TCP backend without sslmode means libpq's sslmode=prefer, "
                "which pggate cannot honour",
                hint=_BACKEND_HOP_HINT,
            )
        if target.sslmode != "disable":
            raise refuse(f'sslmode "{target.sslmode}" is not supported yet', hint=_BACKEND_HOP_HINT)
    return address
