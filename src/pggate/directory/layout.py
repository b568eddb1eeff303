"""The names of a gateway directory's files, in one place: no other module spells them.

``pggate init`` writes them, ``serve`` and ``check`` read them, ``status|reload|stop`` find the
server through them; a directory written by hand uses the same names (README.md). Ground floor:
this module imports nothing.
"""

from __future__ import annotations

from typing import Final

CONF_FILE: Final = "pggate.conf"  # postgresql.conf's counterpart
HBA_FILE: Final = "pg_hba.conf"  # hba_file's default, as PostgreSQL's
IDENT_FILE: Final = "pg_ident.conf"  # ident_file's default
PID_FILE: Final = "pggate.pid"  # the serving process, locked while it runs (postmaster.pid)
RELOAD_FILE: Final = "pggate.reload"  # prefix of each serving process's last reload verdict
DATA_DIR: Final = "pgdata"  # the embedded cluster's data directory
SOCKET_DIR: Final = "pgsocket"  # its private Unix socket directory (no TCP port)
ROOT_CERT: Final = "root.crt"  # the local CA (also ssl_ca_file for client certificates)
ROOT_KEY: Final = "root.key"
ROOT_CRL: Final = "root.crl"
SERVER_CERT: Final = "server.crt"  # ssl_cert_file's default
SERVER_KEY: Final = "server.key"  # ssl_key_file's default
