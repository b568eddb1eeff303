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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pggate import config as config_module
from pggate import policy as policy_module
from pggate import tlsconf
from pggate.config import Config
from pggate.config.files import DiskFiles
from pggate.errors import ConfigError
from pggate.hba import load_hba, load_ident
from pggate.hba.tokens import AuthFileError

log = logging.getLogger("pggate.preflight")

Prompt = Callable[[str], str]


class StartupFailure(ConfigError):
    """serve cannot start: ``errors`` are every problem found in the failing file, in order
    (PostgreSQL logs each bad pg_hba.conf line, then ``FATAL: could not load FILE``)."""

    def __init__(self, errors: list[ConfigError], summary: str | None = None) -> None:
        self.errors = tuple(errors)
        first = errors[0]
        super().__init__(
            summary or first.message,
            file=None if summary else first.file,
            line=None if summary else first.line,
            parameter=first.parameter,
            detail=None if summary else first.detail,
            hint=None if summary else first.hint,
        )


def each_error(err: ConfigError) -> list[ConfigError]:
    """The individual problems behind ``err`` (a whole auth file's, or just itself)."""
    if isinstance(err, AuthFileError | StartupFailure):
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
    """The server TLS context for ``cfg`` (None when ssl is off); raises ConfigError."""
    if not cfg.ssl:
        return None
    return tlsconf.build_server_context(
        tlsconf.TlsSettings.from_config(cfg),
        reloading=reloading,
        prompt=None if reloading else terminal_prompt(),
        log=log.info,
    )


@dataclass(frozen=True, slots=True)
class Loaded:
    """What serve starts with."""

    policy: policy_module.Policy
    tls_context: ssl.SSLContext | None


def load(directory: Path, overrides: Mapping[str, str]) -> Loaded:
    """serve's start: the first failing file stops it (StartupFailure lists its errors)."""
    errors = config_module.check(directory, overrides)
    if errors:
        conf = Path(directory).absolute() / config_module.CONFIG_FILE_NAME
        raise StartupFailure(errors, f'configuration file "{conf}" contains errors')
    cfg = config_module.load(directory, overrides)
    try:
        policy = policy_module.build(cfg)
    except AuthFileError as err:
        raise StartupFailure(list(err.errors), f"could not load {cfg.path(cfg.hba_file)}") from None
    return Loaded(policy, load_tls(cfg, reloading=False))


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
    return found
