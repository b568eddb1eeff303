"""Everything ``pggate serve`` loads before it listens, shared with ``pggate check``.

One code path, so that ``check`` cannot say OK where ``serve`` would then exit FATAL: the
configuration (every bad line), pg_hba.conf and pg_ident.conf (every bad line, as PostgreSQL
logs each), the backend conninfo, and the TLS context itself (certificate and key pair, key
permissions, passphrase command, CA, CRL file and directory, groups, ciphers, protocol range),
built by the same function the server uses. Serve stops at the first file that fails, as
PostgreSQL does; check goes on and reports every file's errors.
"""

from __future__ import annotations

import getpass
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from pggate import config as config_module
from pggate import logs
from pggate import policy as policy_module
from pggate.config import Config
from pggate.config.files import DiskFiles
from pggate.errors import ConfigError
from pggate.hba import load_hba, load_ident
from pggate.hba.tokens import AuthFileError
from pggate.policy import LoadFailure, Prompt

log = logging.getLogger("pggate.preflight")


def each_error(err: ConfigError) -> list[ConfigError]:
    """The individual problems behind ``err`` (a whole auth file's, or just itself)."""
    if isinstance(err, AuthFileError | LoadFailure):
        return list(err.errors)
    return [err]


def render(err: ConfigError) -> str:
    """One problem as check prints it and as the server log shows it: the message with its
    place, then PostgreSQL's DETAIL and HINT lines."""
    text = str(err)
    if err.detail:
        text += f"\nDETAIL:  {err.detail}"
    if err.hint:
        text += f"\nHINT:  {err.hint}"
    return text


def terminal_prompt() -> Prompt | None:
    """Ask for a key passphrase on the controlling terminal; None when there is none."""
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        return None
    return getpass.getpass


def load_tls(cfg: Config, *, reloading: bool) -> ssl.SSLContext | None:
    """The server TLS context for ``cfg`` (None when ssl is off); raises ConfigError. The
    snapshot's own loader, with the terminal as passphrase prompt at start."""
    prompt = None if reloading or not cfg.ssl else terminal_prompt()
    return policy_module.load_tls(cfg, reloading=reloading, prompt=prompt).context


def load(directory: Path, overrides: Mapping[str, str]) -> policy_module.Snapshot:
    """serve's start: the snapshot reload builds too; the first failing file stops it
    (LoadFailure lists its errors, a TLS problem is its ConfigError)."""
    return policy_module.load_snapshot(directory, overrides, prompt=terminal_prompt())


def problems(directory: Path, overrides: Mapping[str, str]) -> list[ConfigError]:
    """check: every problem of every file that serve loads, without stopping at the first.

    pg_ident.conf errors are included: serve starts without the broken maps (as PostgreSQL
    does), but every ``map=`` login would then fail. A missing pg_ident.conf counts only when
    a pg_hba.conf line names a map.
    """
    found = config_module.check(directory, overrides)
    if found:
        return found  # the other files' names and TLS settings come from this one
    cfg = config_module.load(directory, overrides)
    files = DiskFiles()
    uses_maps = True
    try:
        hba = load_hba(str(cfg.path(cfg.hba_file)), files, ssl_enabled=cfg.ssl, warn=log.warning)
    except ConfigError as err:
        found += each_error(err)
    else:
        found += policy_module.cross_file_problems(cfg, hba)
        uses_maps = any(rule.usermap for rule in hba.rules)
    ident_path = cfg.path(cfg.ident_file)
    try:
        load_ident(str(ident_path), files, warn=log.warning)
    except ConfigError as err:
        # No pg_ident.conf is fine while no line names a map (PostgreSQL only logs it).
        if uses_maps or ident_path.exists():
            found += each_error(err)
    try:
        load_tls(cfg, reloading=False)
    except ConfigError as err:
        found.append(err)
    found += logs.problems(cfg)  # log_file that cannot be opened, syslog without a logger
    return found
