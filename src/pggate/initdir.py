"""Create and check gateway directories (``pggate init`` / ``pggate check``).

A directory written by hand is as valid as one made here: ``init`` only writes the files that
``serve`` would read anyway (named in ``directory/layout.py``). ``create`` is all or nothing.
This module drives the configuration, the TLS tooling and the embedded cluster, so it sits
above them, outside the ``directory`` package that they all import.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from pggate import config as config_module
from pggate import embedded, preflight
from pggate import policy as policy_module
from pggate.conninfo import backend_address
from pggate.directory import layout
from pggate.errors import ConfigError, PggateError
from pggate.hba.methods import AuthMethod, ConnType
from pggate.tls import certs

log = logging.getLogger("pggate.initdir")

# Lines on which method "password" cannot leak the password to the network.
_ENCRYPTED_OR_LOCAL = frozenset({ConnType.HOSTSSL, ConnType.HOSTGSSENC, ConnType.LOCAL})

DEFAULT_HBA = """\
# pg_hba.conf for pggate: same syntax and meaning as PostgreSQL's.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
# Loopback clients are trusted, as initdb's default does for local connections.
# Tighten this (hostssl ... scram-sha-256) before exposing the gateway.
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
"""

DEFAULT_IDENT = """\
# pg_ident.conf for pggate: MAPNAME  SYSTEM-USERNAME  PG-USERNAME
"""


def create(
    directory: Path,
    *,
    backend: str | None,
    hostnames: list[str],
    port: int,
    listen_addresses: str,
    postgres_bindir: str | None,
) -> None:
    """Write a ready-to-serve gateway directory (and the embedded cluster unless ``backend``).

    All or nothing: on any failure the directory is left as it was (absent, or empty), so the
    same command can simply be run again.
    """
    if directory.exists() and any(directory.iterdir()):
        raise PggateError(f'directory "{directory}" exists but is not empty')
    settings: dict[str, str] = {
        "port": str(port),
        "listen_addresses": listen_addresses,
        "ssl": "on",
        "ssl_ca_file": layout.ROOT_CERT,
    }
    if backend:
        backend_address(backend)
        settings["backend"] = backend
    if postgres_bindir:
        settings["postgres_bindir"] = postgres_bindir
    conf = config_module.render_default_conf(**settings)  # bad values fail before any write
    with _undone_on_failure(directory):
        directory.mkdir(parents=True, exist_ok=True)
        cluster = None
        if not backend:  # find the binaries and the cluster's user before making keys
            cluster = embedded.EmbeddedCluster.for_gateway(directory, bindir=postgres_bindir)
        # TLS on by default: a local CA (root.crt, also the CA for client certificates) and a
        # server certificate for the names given plus localhost, so verify-full works at once.
        certs.init_tls(directory, hostnames)
        (directory / layout.CONF_FILE).write_text(conf)
        (directory / layout.HBA_FILE).write_text(DEFAULT_HBA)
        (directory / layout.IDENT_FILE).write_text(DEFAULT_IDENT)
        if cluster is not None:
            cluster.init()


@contextlib.contextmanager
def _undone_on_failure(directory: Path) -> Iterator[None]:
    """Remove what the block created if it fails (Ctrl-C included): the directories it made,
    or, in a directory that existed (empty), everything in it."""
    made = directory.absolute()
    while not made.parent.exists():
        made = made.parent
    existed = made.exists()
    try:
        yield
    except BaseException:
        if not existed:
            _remove(made)
        elif directory.is_dir():
            for entry in directory.iterdir():
                _remove(entry)
        raise


def _remove(path: Path) -> None:
    """Best effort: what cannot be removed is logged (the failure itself is reported next)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        log.warning('could not remove "%s" after the failed init: %s', path, exc)


def check(directory: Path, overrides: Mapping[str, str]) -> list[str]:
    """Every problem that would stop ``pggate serve DIR`` (and a few it would only log), each
    rendered as the server log shows it; serve's own loading does the work (preflight)."""
    found = preflight.problems(directory, overrides)
    problems = [preflight.render(err) for err in found]
    if found and config_module.check(directory, overrides):
        return problems  # without a valid pggate.conf nothing else can be located
    snapshot_config = config_module.load(directory, overrides)
    keyfile = snapshot_config.krb_server_keyfile
    if keyfile:
        problem = keytab_problem(snapshot_config.path(keyfile.removeprefix("FILE:")))
        if problem:
            problems.append(problem)
    if not snapshot_config.backend:
        data_dir = directory / layout.DATA_DIR
        if not (data_dir / "PG_VERSION").is_file():
            problems.append(
                f'embedded cluster missing: "{data_dir}" has no PG_VERSION '
                '(run "pggate init", or set backend)'
            )
        try:
            embedded.find_postgres_bindir(snapshot_config.postgres_bindir or None)
        except PggateError as err:
            problems.append(str(err))
    return problems


def cleartext_warnings(directory: Path, overrides: Mapping[str, str]) -> list[str]:
    """pg_hba.conf lines whose ``password`` method may receive a password in clear text."""
    try:
        snapshot = policy_module.load(directory, overrides)
    except ConfigError:
        return []  # check() reports the problem itself
    return [
        f'{rule.file}:{rule.line_number}: method "password" sends the password in clear text '
        "on connections this line does not require to be encrypted (use hostssl or "
        "hostgssenc, or scram-sha-256)"
        for rule in snapshot.hba.rules
        if rule.method is AuthMethod.PASSWORD and rule.conn_type not in _ENCRYPTED_OR_LOCAL
    ]


def keytab_problem(path: Path) -> str | None:
    """Why ``krb_server_keyfile`` cannot accept GSSAPI contexts, or None when it can."""
    import gssapi

    if not path.is_file():
        return f'krb_server_keyfile "{path}" does not exist'
    try:
        gssapi.Credentials(usage="accept", store={b"keytab": str(path).encode()})
    except gssapi.raw.misc.GSSError as exc:
        return f'krb_server_keyfile "{path}" holds no usable key: {exc.gen_message()}'
    return None
