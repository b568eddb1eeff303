"""One consistent snapshot of everything a connection is served with.

A :class:`Snapshot` holds what the files say (:class:`Policy`: pggate.conf, pg_hba.conf,
pg_ident.conf, the backend address) and what was loaded from them (:class:`TlsState`: the TLS
context with its certificate's ``tls-server-end-point`` hash; :class:`GssState`: the keytab).
:func:`load_snapshot` builds it, at start and on every reload, with PostgreSQL's rule for each
file; the server swaps it in with one assignment and each connection takes it once, at
accept, so a connection never sees half of an old configuration and half of a new one.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pggate import config as config_module
from pggate import logs
from pggate.config import Config
from pggate.config.files import DiskFiles
from pggate.conninfo import BackendTarget, HostSpec
from pggate.directory import layout
from pggate.errors import ConfigError
from pggate.hba import AuthMethod, HbaPolicy, IdentMaps, load_hba, load_ident
from pggate.hba.tokens import AuthFileError
from pggate.hop.route import Route, build_route
from pggate.tls import context as tlsconf

log = logging.getLogger("pggate.policy")

Prompt = Callable[[str], str]

EMBEDDED_PORT = 5432
EMBEDDED_SUPERUSER = "postgres"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the files say: the configuration, pg_hba.conf, pg_ident.conf, the backend."""

    config: Config
    hba: HbaPolicy
    ident: IdentMaps
    backend: Route

    @property
    def embedded(self) -> bool:
        return not self.config.backend


def embedded_backend(directory: Path) -> Route:
    """The private Unix socket of the embedded cluster inside the gateway directory."""
    host = str(directory.resolve() / layout.SOCKET_DIR)
    target = BackendTarget(
        hosts=(HostSpec(host, port=EMBEDDED_PORT, port_text=str(EMBEDDED_PORT)),),
        user=EMBEDDED_SUPERUSER,
        dbname="postgres",
        sslmode="disable",
    )
    return Route(target)


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
        if rule.method is AuthMethod.GSS
    ]


def build(cfg: Config, previous: Policy | None = None) -> Policy:
    """Load pg_hba.conf and pg_ident.conf named by ``cfg``.

    As in PostgreSQL, each file is all-or-nothing on its own: a broken pg_hba.conf is fatal at
    start and keeps the previous rules on reload (``ConfigError`` is raised); a broken or missing
    pg_ident.conf is logged and leaves the previous maps (none at start) in force.
    """
    files = DiskFiles()
    hba = load_hba(str(cfg.path(cfg.hba_file)), files, ssl_enabled=cfg.ssl, warn=log.warning)
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
    keyfile = cfg.backend_krb_client_keyfile
    client_keyfile = cfg.path(keyfile.removeprefix("FILE:")) if keyfile else None
    backend = (
        build_route(
            cfg.backend,
            max_iterations=cfg.backend_scram_max_iterations,
            client_keyfile=client_keyfile,
        )
        if cfg.backend
        else embedded_backend(cfg.directory)
    )
    return Policy(config=cfg, hba=hba, ident=ident, backend=backend)


def load(directory: Path | str, overrides: Mapping[str, str] | None = None) -> Policy:
    """Load a gateway directory's files from scratch (for the commands that judge a directory
    without serving it; serve loads a whole :class:`Snapshot`)."""
    return build(config_module.load(Path(directory), overrides or {}))


@dataclass(frozen=True, slots=True)
class TlsState:
    """The server TLS context (None: ``ssl = off``) and the ``tls-server-end-point`` hash of
    the certificate it presents (None: no SCRAM-SHA-256-PLUS), loaded together so that a
    connection binds to the certificate it was offered, across any reload."""

    context: ssl.SSLContext | None = None
    end_point_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class GssState:
    """GSSAPI: ``keytab`` (``FILE:/path``) when ``krb_server_keyfile`` names a readable keytab,
    else None, and GSSENCRequest is answered ``N``."""

    keytab: str | None = None

    @property
    def enabled(self) -> bool:
        return self.keytab is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one connection is served with, swapped whole on reload."""

    policy: Policy
    tls: TlsState
    gss: GssState


class LoadFailure(ConfigError):
    """A file that loads all or nothing failed: ``errors`` are its problems, in order, and the
    message is PostgreSQL's FATAL for it at start (``could not load FILE``); on reload each
    problem is logged and the previous snapshot stays."""

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


def load_tls(cfg: Config, *, reloading: bool, prompt: Prompt | None = None) -> TlsState:
    """The TLS state ``cfg`` asks for (be_tls_init); raises ConfigError. ``prompt`` asks the
    terminal for a key passphrase at start; on reload a passphrase only comes from
    ``ssl_passphrase_command`` with ``ssl_passphrase_command_supports_reload``."""
    if not cfg.ssl:
        return TlsState()
    context = tlsconf.build_server_context(
        tlsconf.TlsSettings.from_config(cfg),
        reloading=reloading,
        prompt=None if reloading else prompt,
        log=log.info,
    )
    return TlsState(context, tlsconf.certificate_info(context).end_point_hash)


def load_gss(cfg: Config) -> GssState:
    """GSSENCRequest is answered ``G`` when krb_server_keyfile names a readable keytab."""
    keyfile = cfg.krb_server_keyfile
    if not keyfile:
        return GssState()
    path = cfg.path(keyfile.removeprefix("FILE:"))
    if not os.access(path, os.R_OK):
        log.warning('could not read Kerberos keytab "%s"; GSSAPI is disabled', path)
        return GssState()
    return GssState(keytab=f"FILE:{path}")


def load_snapshot(
    directory: Path,
    overrides: Mapping[str, str],
    *,
    previous: Snapshot | None = None,
    prompt: Prompt | None = None,
) -> Snapshot:
    """The snapshot of ``directory``: at start (``previous`` None) or on reload.

    PostgreSQL's rule for each file:

    * pggate.conf (with ``overrides``) and pg_hba.conf: all or nothing. A broken one raises
      :class:`LoadFailure` with every problem found (at start fatal; on reload the caller keeps
      ``previous``); another ConfigError (the backend conninfo) is raised as it is. On reload,
      restart-only settings keep their values, with PostgreSQL's message for each one changed.
    * pg_ident.conf: a broken or missing file is logged and the previous maps (none at start)
      stay in force.
    * TLS: at start a failure is raised (ConfigError). On reload it is logged with ``SSL
      configuration was not reloaded`` and the previous TLS state stays; that includes an
      encrypted key whose passphrase cannot be asked again.
    * GSSAPI: on when ``krb_server_keyfile`` names a readable keytab.
    """
    problems = config_module.check(directory, overrides)
    if problems:
        conf = Path(directory).absolute() / config_module.CONFIG_FILE_NAME
        raise LoadFailure(problems, f'configuration file "{conf}" contains errors')
    cfg = config_module.load(directory, overrides)
    messages: list[str] = []
    if previous is not None:
        cfg, messages = config_module.reload_diff(previous.policy.config, cfg)
    try:
        policy = build(cfg, previous=None if previous is None else previous.policy)
    except AuthFileError as err:
        raise LoadFailure(list(err.errors), f"could not load {cfg.path(cfg.hba_file)}") from None
    for message in messages:
        log.info("%s", message)
    if previous is None:
        tls = load_tls(cfg, reloading=False, prompt=prompt)
    else:
        try:
            tls = load_tls(cfg, reloading=True)
        except ConfigError as exc:
            logs.report(log, logging.ERROR, exc)
            log.info("SSL configuration was not reloaded")
            tls = previous.tls
    return Snapshot(policy, tls, load_gss(cfg))
