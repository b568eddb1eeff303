"""libpq 18's connection keywords and what pggate does with each.

``LIBPQ_KEYWORDS`` is fe-connect.c's ``PQconninfoOptions`` table, in its order (the unit tests
compare it with the installed libpq's ``PQconndefaults``). pggate acts on most of them; the
rest are listed in ``NOT_SUPPORTED`` with the reason, and a conninfo naming one is refused
(fail closed: a keyword is never accepted and then ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

LIBPQ_KEYWORDS: tuple[str, ...] = (
    "service",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "min_protocol_version",
    "max_protocol_version",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "replication",
    "target_session_attrs",
    "load_balance_hosts",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "sslkeylogfile",
)
KNOWN = frozenset(LIBPQ_KEYWORDS)

# conninfo_storeval: the pre-9.x keyword "requiressl" is stored as sslmode ("1..." → require,
# anything else → prefer); in a URI query, "ssl=true" means sslmode=require (JDBC's spelling).
REQUIRESSL = "requiressl"

# Values never shown in an error or a repr: libpq's "*" (password) display fields and the SCRAM
# keys, which are password equivalents.
SECRET_KEYWORDS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

_OAUTH = "pggate does not log in to its backend with OAuth"
NOT_SUPPORTED: Mapping[str, str] = MappingProxyType(
    {
        "service": "pggate reads no connection service file; write the settings themselves",
        "client_encoding": "pggate's own connections use the backend's default encoding",
        "sslcompression": "TLS compression is obsolete (CRIME) and pggate never enables it",
        "sslcertmode": "pggate sends its client certificate whenever sslcert names one",
        "requirepeer": "pggate does not check the backend's operating-system user",
        "min_protocol_version": "pggate chooses the protocol version of its backend connections",
        "max_protocol_version": "pggate chooses the protocol version of its backend connections",
        "gsslib": "pggate uses GSSAPI (the gssapi module), never SSPI",
        "gssdelegation": "pggate never delegates GSSAPI credentials to its backend",
        "replication": "pggate relays regular sessions only",
        "scram_client_key": "pggate takes SCRAM keys from the client's own login",
        "scram_server_key": "pggate takes SCRAM keys from the client's own login",
        "oauth_issuer": _OAUTH,
        "oauth_client_id": _OAUTH,
        "oauth_client_secret": _OAUTH,
        "oauth_scope": _OAUTH,
        "sslkeylogfile": "pggate never writes TLS key material to a file",
    }
)
SUPPORTED = KNOWN - NOT_SUPPORTED.keys()

# Debian's libpq (DEFAULT_PGSOCKET_DIR): the socket directory when no host is named.
DEFAULT_SOCKET_DIR = "/var/run/postgresql"
DEFAULT_PORT = 5432  # DEF_PGPORT
