"""One consistent snapshot of everything a connection is judged by.

pggate.conf, pg_hba.conf and pg_ident.conf are loaded together into a frozen :class:`Policy`.
A reload builds a whole new snapshot and swaps it in only if every file loaded, so a
connection never sees half of an old configuration and half of a new one (PostgreSQL's
all-or-nothing reload).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pggate import config as config_module
from pggate.config import Config
from pggate.config.files import DiskFiles
from pggate.conninfo import BackendAddress, backend_address
from pggate.errors import ConfigError
from pggate.hba import HbaPolicy, IdentMaps, load_hba, load_ident
from pggate.hba.tokens import AuthFileError

log = logging.getLogger("pggate.policy")

EMBEDDED_DATA_DIR = "pgdata"
EMBEDDED_SOCKET_DIR = "pgsocket"
EMBEDDED_PORT = 5432
EMBEDDED_SUPERUSER = "postgres"


@dataclass(frozen=True, slots=True)
class Policy:
    config: Config
    hba: HbaPolicy
    ident: IdentMaps
    backend: BackendAddress

    @property
    def embedded(self) -> bool:
        return not self.config.backend


def embedded_backend(directory: Path) -> BackendAddress:
    """The private Unix socket of the embedded cluster inside the gateway directory."""
    return BackendAddress(
        host=str(directory.resolve() / EMBEDDED_SOCKET_DIR),
        port=EMBEDDED_PORT,
        user=EMBEDDED_SUPERUSER,
        dbname="postgres",
    )


def cross_file_problems(cfg: Config, hba: HbaPolicy) -> list[ConfigError]:
    """pg_hba.conf lines that pggate.conf leaves without their effect.

    PostgreSQL's ``gss`` falls back to the system keytab; pggate's empty krb_server_keyfile
    means "GSSAPI is off", so a ``gss`` line would otherwise authenticate against whatever
    keytab the process environment happens to name: refused instead.
    """
    if cfg.krb_server_keyfile:
        return []
    return [
        ConfigError(
            'authentication method "gss" requires krb_server_keyfile to be set',
            file=rule.file,
            line=rule.line_number,
            hint="Set krb_server_keyfile in pggate.conf to the keytab of the service "
            "principal; pggate does not fall back to the system keytab.",
        )
        for rule in hba.rules
        if rule.method == "gss"
    ]


def build(cfg: Config, previous: Policy | None = None) -> Policy:
    """Load pg_hba.conf and pg_ident.conf named by ``cfg``.

    As in PostgreSQL, each file is all-or-nothing on its own: a broken pg_hba.conf is fatal at
    start and keeps the previous rules on reload (``ConfigError`` is raised); a broken or missing
    pg_ident.conf is logged and leaves the previous maps (none at start) in force.
    """
    files = DiskFiles()
    hba = load_hba(
        str(cfg.path(cfg.hba_file)), files, ssl_enabled=cfg.ssl, warn=log.warning
    )
    crossed = cross_file_problems(cfg, hba)
    if crossed:
        raise AuthFileError(crossed)
    ident_path = str(cfg.path(cfg.ident_file))
    try:
        ident = load_ident(ident_path, files, warn=log.warning)
    except ConfigError as err:
        # Each bad line, as PostgreSQL logs each. A missing file is no error while no
        # pg_hba.conf line names a map (a hand-written directory need not have one).
        missing = not Path(ident_path).exists() and not any(r.usermap for r in hba.rules)
        for problem in err.errors if isinstance(err, AuthFileError) else (err,):
            log.log(logging.INFO if missing else logging.ERROR, "%s", problem)
        if previous is not None:
            log.info("%s was not reloaded", ident_path)
            ident = previous.ident
        else:
            ident = IdentMaps()
    backend = backend_address(cfg.backend) if cfg.backend else embedded_backend(cfg.directory)
    return Policy(config=cfg, hba=hba, ident=ident, backend=backend)


def load(directory: Path | str, overrides: Mapping[str, str] | None = None) -> Policy:
    """Load a gateway directory from scratch."""
    return build(config_module.load(Path(directory), overrides or {}))
