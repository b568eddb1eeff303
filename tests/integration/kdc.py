"""A throwaway MIT Kerberos realm for GSSAPI tests, built the way PostgreSQL's own
``src/test/perl/PostgreSQL/Test/Kerberos.pm`` builds it (shared/protocol.md §9.6).

Realm ``EXAMPLE.COM``; ``krb5kdc`` on ``127.0.0.1:<free port>`` (UDP and TCP); ``krb5.conf`` and
``kdc.conf`` in a temp dir with every DNS lookup off (``dns_lookup_realm``/``dns_lookup_kdc``
false, ``rdns`` false, ``dns_canonicalize_hostname`` false), so the service principal
``postgres/localhost`` is reached by the client target ``postgres@localhost`` (libpq: host
``localhost``, ``hostaddr=127.0.0.1``) without any resolver. The database is
``kdb5_util create -s -P secret0``, the service key goes to ``krb5.keytab`` with ``ktadd``,
users get passwords with ``addprinc -pw`` and tickets with ``kinit`` into a private ccache each.

Not a test module: conftest.py imports the ``kdc`` fixture
(``from kdc import kdc  # noqa: F401``). The fixture skips only when the MIT KDC programs are
missing (Debian: ``krb5-kdc krb5-admin-server krb5-user``); anything else failing is an error.

For in-process GSSAPI (python ``gssapi`` in the test process) the fixture exports
``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``, ``KRB5_KTNAME``, ``KRB5CCNAME`` (a default ccache nobody
uses) and ``KRB5RCACHEDIR`` for the session and restores them at teardown; subprocesses (pggate,
psql) get ``Realm.env(...)`` explicitly.

The PyPI ``k5test`` package does the same job, but it binds fixed ports (61000+), names the
service after ``socket.getfqdn()`` and starts kadmind machinery this suite does not need; this
module uses a free port and ``localhost`` so it works on any loopback-only machine and in
parallel sessions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gssapi
import pytest

REALM = "EXAMPLE.COM"
HOST = "localhost"
HOSTADDR = "127.0.0.1"
SERVICE = "postgres"
MASTER_PASSWORD = "secret0"
READY_TIMEOUT = 30.0

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories Debian installs the KDC tools into."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    # Free for both UDP and TCP: the KDC listens on both at the same number.
    while True:
        with socket.socket() as tcp:
            tcp.bind((HOSTADDR, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOSTADDR, port))
                except OSError:
                    continue
            return port


def _wait_for_kdc(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"krb5kdc exited with code {process.returncode}:\n"
                + (log.read_text(errors="replace") if log.exists() else "(no log)")
            )
        with contextlib.suppress(OSError), socket.create_connection((HOSTADDR, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"krb5kdc is not listening on {HOSTADDR}:{port}")


@dataclass
class Realm:
    """A running test realm. ``principal(name)`` → ``name@EXAMPLE.COM``."""

    base: Path
    port: int
    keytab: Path
    krb5_conf: Path
    kdc_conf: Path
    kdc_log: Path
    realm: str = REALM
    host: str = HOST
    service: str = SERVICE
    _programs: dict[str, str] = field(default_factory=dict, repr=False)
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def service_principal(self) -> str:
        return f"{self.service}/{self.host}@{self.realm}"

    @property
    def target_name(self) -> str:
        """The host-based service name a client asks for (``postgres@localhost``)."""
        return f"{self.service}@{self.host}"

    def principal(self, name: str) -> str:
        return name if "@" in name else f"{name}@{self.realm}"

    def env(self, ccache: Path | str | None = None) -> dict[str, str]:
        """Environment for a Kerberos-aware subprocess (server or client) of this realm.

        The server side needs ``KRB5_KTNAME`` (pggate also takes ``krb_server_keyfile``);
        a client needs ``KRB5CCNAME`` = the ccache of one :meth:`kinit`.
        """
        env = {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5_KTNAME": f"FILE:{self.keytab}",
            "KRB5RCACHEDIR": str(self.base / "rcache"),
        }
        if ccache is not None:
            env["KRB5CCNAME"] = f"FILE:{ccache}"
        return env

    def _run(self, program: str, *args: str, stdin: str | None = None) -> str:
        env = {**os.environ, **self.env()}
        result = subprocess.run(
            [self._programs[program], *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def kadmin(self, query: str) -> str:
        return self._run("kadmin.local", "-q", query)

    def create_principal(self, name: str, password: str) -> str:
        """``addprinc -pw``; returns the full principal."""
        principal = self.principal(name)
        self.kadmin(f"addprinc -pw {password} {principal}")
        self._passwords[principal] = password
        return principal

    def kinit(self, name: str, password: str | None = None, *, forwardable: bool = False) -> Path:
        """A fresh ccache holding ``name``'s TGT (``kinit [-f]``); returns its path.

        Each call writes its own file, so tests never share or clobber tickets.
        """
        principal = self.principal(name)
        secret = password if password is not None else self._passwords[principal]
        fd, path = tempfile.mkstemp(prefix="krb5cc_", dir=self.base / "ccaches")
        os.close(fd)
        os.unlink(path)  # kinit creates it; an empty file is not a valid ccache
        args = ["-c", f"FILE:{path}"]
        if forwardable:
            args.append("-f")
        self._run("kinit", *args, principal, stdin=secret + "\n")
        return Path(path)

    def acceptor_credentials(self) -> gssapi.Credentials:
        """``gssapi.Credentials(usage="accept")`` from this realm's keytab, explicitly (cred
        store), independent of ``KRB5_KTNAME``."""
        return gssapi.Credentials(usage="accept", store={"keytab": f"FILE:{self.keytab}"})

    def initiator_credentials(self, ccache: Path) -> gssapi.Credentials:
        """``gssapi.Credentials(usage="initiate")`` from a :meth:`kinit` ccache."""
        return gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})


def _write_configs(base: Path, port: int) -> tuple[Path, Path, Path]:
    data = base / "krb5kdc"
    data.mkdir()
    (base / "ccaches").mkdir()
    (base / "rcache").mkdir()
    kdc_log = base / "krb5kdc.log"
    krb5_conf = base / "krb5.conf"
    krb5_conf.write_text(
        f"""[logging]
default = FILE:{base / "krb5libs.log"}
kdc = FILE:{kdc_log}

[libdefaults]
dns_lookup_realm = false
dns_lookup_kdc = false
dns_canonicalize_hostname = false
default_realm = {REALM}
forwardable = false
rdns = false
udp_preference_limit = 1

[realms]
{REALM} = {{
    kdc = {HOSTADDR}:{port}
}}

[domain_realm]
{HOST} = {REALM}
"""
    )
    kdc_conf = base / "kdc.conf"
    # kdc_listen / kdc_tcp_listen (krb5 >= 1.15) bind to the loopback address only.
    kdc_conf.write_text(
        f"""[kdcdefaults]
kdc_listen = {HOSTADDR}:{port}
kdc_tcp_listen = {HOSTADDR}:{port}

[realms]
{REALM} = {{
    database_name = {data / "principal"}
    admin_keytab = FILE:{data / "kadm5.keytab"}
    acl_file = {data / "kadm5.acl"}
    key_stash_file = {data / f"_k5.{REALM}"}
}}
"""
    )
    return krb5_conf, kdc_conf, kdc_log


@contextlib.contextmanager
def running_realm() -> Iterator[Realm]:
    """Create the realm, start the KDC, yield, stop the KDC and remove everything."""
    programs = {name: find_program(name) for name in _PROGRAMS}
    missing = sorted(name for name, path in programs.items() if path is None)
    if missing:
        pytest.skip(
            f"MIT Kerberos KDC programs not installed ({', '.join(missing)}); "
            "Debian: apt-get install krb5-kdc krb5-admin-server krb5-user"
        )
    base = Path(tempfile.mkdtemp(prefix="pggate-kdc-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        krb5_conf, kdc_conf, kdc_log = _write_configs(base, port)
        realm = Realm(
            base=base,
            port=port,
            keytab=base / "krb5.keytab",
            krb5_conf=krb5_conf,
            kdc_conf=kdc_conf,
            kdc_log=kdc_log,
            _programs={name: path for name, path in programs.items() if path is not None},
        )
        realm._run("kdb5_util", "create", "-s", "-P", MASTER_PASSWORD)
        principal = f"{SERVICE}/{HOST}"
        realm.kadmin(f"addprinc -randkey {principal}")
        realm.kadmin(f"ktadd -k {realm.keytab} {principal}")
        # -n: stay in the foreground, so the fixture owns the process and its exit code.
        process = subprocess.Popen(
            [programs["krb5kdc"] or "krb5kdc", "-n", "-P", str(base / "krb5kdc.pid")],
            env={**os.environ, **realm.env()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_kdc(port, process, kdc_log)
        yield realm
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def exported(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in the environment while the block runs, then what was there before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@pytest.fixture(scope="session")
def kdc() -> Iterator[Realm]:
    """The session's Kerberos realm (see the module docstring), with users ``test1``
    (password ``secret1``) and ``test2`` (``secret2``)."""
    with running_realm() as realm:
        realm.create_principal("test1", "secret1")
        realm.create_principal("test2", "secret2")
        # In-process GSSAPI reads these at each krb5 context creation; a default ccache that
        # no test fills keeps the developer's own tickets out of the tests.
        with exported(realm.env(realm.base / "ccaches" / "default")):
            yield realm


__all__ = ["HOST", "HOSTADDR", "REALM", "SERVICE", "Realm", "find_program", "kdc", "running_realm"]
