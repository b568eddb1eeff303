"""Scenario 4, ``reload_storm``: N SIGHUPs in S seconds while M TLS sessions stream COPY in and
out. Before each SIGHUP one of pg_hba.conf, the server certificate, its key or the CRL is
rewritten in place (truncate + write, as an operator's editor does), alternately with a valid
version and a broken one; the storm ends on a broken file.

PostgreSQL's rules, which pggate follows on reload: a broken pg_hba.conf is rejected whole and
the previous rules stay ("configuration files were not reloaded"); a TLS file that cannot be
loaded leaves the previous SSL context in force ("SSL configuration was not reloaded",
be_tls_init with isServerStart false) while the rest of the reload applies. Sessions already
open are never touched by a reload.

Holds when every COPY round trip of every session succeeds with the bytes read back equal to
the bytes sent (SHA-256), every session still runs afterwards, every canary login succeeds,
pggate keeps its PID and logs no internal error, each reload's verdict is the one its file
deserves (each broken file rejected, each valid one applied), and afterwards the last valid
version of each file is in force: the pg_hba.conf rule only it has refuses its probe role while
the rule of the one before no longer does, clients receive its certificate (serial number), and
its CRL revokes the client certificate it names while the one the CRL before named is accepted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import os
import random
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from bench.robust.common import SSL_REQUEST, Canary, Env, Row, log, startup
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pggate.tls import certs

NAME = "reload_storm"
KINDS = ("cert", "hba", "key", "crl")  # the first one is the storm's last, broken, file
VERDICT_TIMEOUT = 5.0  # seconds for pggate to log a reload's verdict
MAX_SILENT = 3  # reloads without a verdict before the storm is called off (pggate is stuck)
ROWS_PER_COPY = 400  # ~52 KB of COPY data each way per round trip
APPLIED = "configuration files reloaded"
REJECTED = "configuration files were not reloaded"
TLS_KEPT = "SSL configuration was not reloaded"


# --------------------------------------------------------------------------- the files


def pem(obj: x509.Certificate | x509.CertificateRevocationList | certs.PrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate | x509.CertificateRevocationList):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def server_cert(
    ca: tuple[x509.Certificate, certs.PrivateKey], key: certs.PrivateKey, generation: int
) -> x509.Certificate:
    """A certificate for 127.0.0.1 on ``key`` (the key file stays the same; only the
    certificate file changes), signed by the storm's CA, CN ``reload-storm-GENERATION``."""
    ca_cert, ca_key = ca
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"reload-storm-{generation}")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def hba_text(generation: int) -> str:
    """Valid pg_hba.conf number ``generation``: refuses role ``storm_probe_GENERATION`` only."""
    return (
        f"hostssl all storm_probe_{generation} 127.0.0.1/32 reject\n"
        "hostssl all all 127.0.0.1/32 trust\n"
    )


BROKEN_HBA = (
    "hostssl all all 127.0.0.1/32 no_such_method\n",
    "hostssl all all 127.0.0.1/33 trust\n",
    "hostssl all\n",
    "hostssl all all 127.0.0.1/32 trust bogus_option=1\n",
)


def truncated(data: bytes) -> bytes:
    """The first half of a file, as an editor that died mid-write leaves it."""
    return data[: len(data) // 2]


@dataclass
class Files:
    """The storm's CA, the files pggate reads, and what the last valid version of each was."""

    directory: Path
    hba: Path
    ca: tuple[x509.Certificate, certs.PrivateKey]
    key: certs.PrivateKey
    other_key: certs.PrivateKey  # a valid key that matches no certificate on disk
    generation: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    cert_serials: dict[int, int] = field(default_factory=dict)  # generation -> serial
    revoked: dict[int, Path] = field(default_factory=dict)  # CRL generation -> client cert
    broken_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def path(self, kind: str) -> Path:
        names = {"cert": "server.crt", "key": "server.key", "crl": "root.crl"}
        return self.hba if kind == "hba" else self.directory / names[kind]

    def settings(self) -> list[str]:
        return [
            f"ssl_cert_file = '{self.path('cert')}'",
            f"ssl_key_file = '{self.path('key')}'",
            f"ssl_ca_file = '{self.ca_path}'",
            f"ssl_crl_file = '{self.path('crl')}'",
        ]

    def write(self, kind: str, valid: bool) -> None:
        """Rewrite one file in place, valid (its next generation) or broken."""
        data = self.valid_data(kind) if valid else self.broken_data(kind)
        with self.path(kind).open("wb") as out:  # truncate + write, not rename
            out.write(data)

    def valid_data(self, kind: str) -> bytes:
        generation = self.generation[kind] = self.generation[kind] + 1
        if kind == "hba":
            return hba_text(generation).encode()
        if kind == "key":
            return pem(self.key)
        if kind == "cert":
            cert = server_cert(self.ca, self.key, generation)
            self.cert_serials[generation] = cert.serial_number
            return pem(cert)
        client, client_key = certs.make_client_cert(*self.ca, "postgres")
        self.revoked[generation] = self.directory / f"client-{generation}.crt"
        self.revoked[generation].write_bytes(pem(client) + pem(client_key))
        self.revoked[generation].chmod(0o600)
        return pem(certs.revoke(*self.ca, None, [client.serial_number]))

    def broken_data(self, kind: str) -> bytes:
        """Four ways of broken, in turn: a PEM block of junk, an empty file, a valid file cut
        in half, and a file that parses but does not fit (a certificate and a key that are not
        a pair; for the CRL, a mangled PEM header). A broken pg_hba.conf is the valid one plus
        a bad line (an unknown method, a bad mask, a short line, an unknown option)."""
        variant = self.broken_written[kind] % 4
        self.broken_written[kind] += 1
        if kind == "hba":
            return (hba_text(self.generation["hba"]) + BROKEN_HBA[variant]).encode()
        label = {"cert": "CERTIFICATE", "key": "PRIVATE KEY", "crl": "X509 CRL"}[kind]
        if variant == 0:
            return f"-----BEGIN {label}-----\nbm90IGFueXRoaW5n\n-----END {label}-----\n".encode()
        if variant == 1:
            return b""
        if kind == "cert":
            key = self.key if variant == 2 else self.other_key  # 3: not the key's certificate
            data = pem(server_cert(self.ca, key, 0))
            return truncated(data) if variant == 2 else data
        if kind == "key":
            return pem(self.other_key) if variant == 3 else truncated(pem(self.key))
        crl = pem(certs.revoke(*self.ca, None, []))
        return truncated(crl) if variant == 2 else crl.replace(b"-----BEGIN", b"-----BEGAN")


def make_files(directory: Path, hba: Path) -> Files:
    """The storm's own CA (its key is needed to sign new certificates and CRLs), generation 0
    of the certificate and the CRL, and the key."""
    directory.mkdir(mode=0o755)
    files = Files(
        directory,
        hba,
        certs.make_ca("pggate reload storm CA"),
        certs.generate_key(),
        certs.generate_key(),
    )
    files.ca_path.write_bytes(pem(files.ca[0]))
    key_path = files.path("key")
    key_path.touch(mode=0o600)
    key_path.write_bytes(pem(files.key))
    cert = server_cert(files.ca, files.key, 0)
    files.cert_serials[0] = cert.serial_number
    files.path("cert").write_bytes(pem(cert))
    files.path("crl").write_bytes(pem(certs.revoke(*files.ca, None, [])))
    return files


# --------------------------------------------------------------------------- the sessions


@dataclass
class Session:
    """One client streaming COPY round trips: rows in (FROM STDIN), the same rows back out (TO
    STDOUT, ordered), SHA-256 of the bytes sent and of the bytes received compared."""

    index: int
    conninfo: str
    rounds: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    mismatches: int = 0
    error: str | None = None
    backend_pid: int | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            with psycopg.connect(
                self.conninfo, autocommit=True, application_name=f"storm{self.index}"
            ) as conn:
                self.backend_pid = conn.info.backend_pid
                conn.execute("create temp table storm (n int, payload text)")
                rng = random.Random(self.index)
                while not stop.is_set():
                    self.round_trip(conn, rng)
                self.check_still_same(conn)
        except Exception as exc:  # a broken session, whatever broke it
            self.error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"

    def round_trip(self, conn: psycopg.Connection, rng: random.Random) -> None:
        data = "".join(
            f"{n}\t{self.rounds}-{rng.randbytes(60).hex()}\n" for n in range(ROWS_PER_COPY)
        ).encode()
        conn.execute("truncate storm")
        with conn.cursor() as cur:
            with cur.copy("copy storm (n, payload) from stdin") as copy:
                copy.write(data)
            got = hashlib.sha256()
            size = 0
            with cur.copy("copy (select n, payload from storm order by n) to stdout") as copy:
                for chunk in copy:
                    got.update(chunk)
                    size += len(chunk)
        self.rounds += 1
        self.bytes_in += len(data)
        self.bytes_out += size
        if got.digest() != hashlib.sha256(data).digest():
            self.mismatches += 1

    def check_still_same(self, conn: psycopg.Connection) -> None:
        """The session is the one it was: same backend, still over TLS."""
        row = conn.execute("select pg_backend_pid()").fetchone()
        if conn.info.backend_pid != self.backend_pid or row is None:
            raise RuntimeError("the session's backend changed")
        if conn.pgconn.ssl_in_use is not True:
            raise RuntimeError("the session is no longer over TLS")


# --------------------------------------------------------------------------- the storm


@dataclass
class LogTail:
    """New lines of pggate's log, read from where the previous read stopped."""

    path: Path
    offset: int = 0

    def skip_to_end(self) -> None:
        self.offset = self.path.stat().st_size

    def until_verdict(self, timeout: float) -> str | None:
        """The log text up to the next reload verdict line, or None after ``timeout``."""
        text = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            self.offset += len(chunk)
            text += chunk.decode(errors="replace")
            if APPLIED in text or REJECTED in text:
                return text
            time.sleep(0.005)
        return None


def verdict(text: str | None) -> str:
    """What pggate did with one reload, from its log lines."""
    if text is None:
        return "no verdict"
    if REJECTED in text:
        return "rejected"
    return "TLS kept" if TLS_KEPT in text else "applied"


def expected_verdict(kind: str, valid: bool) -> str:
    if valid:
        return "applied"
    return "rejected" if kind == "hba" else "TLS kept"


@dataclass
class Storm:
    sighups: int = 0
    seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)


def schedule(count: int) -> list[tuple[str, bool]]:
    """(file kind, valid) per SIGHUP: valid and broken alternate, each broken file is repaired
    by the next step (so every reload's verdict is known), and the last step is broken."""
    steps = []
    for i in range(count):
        valid = (count - 1 - i) % 2 == 1
        steps.append((KINDS[((count - i) // 2) % len(KINDS)], valid))
    return steps


def storm(gate_pid: int, files: Files, tail: LogTail, count: int, seconds: float) -> Storm:
    """Write + SIGHUP ``count`` times over ``seconds``; each reload's verdict is waited for
    before the next write, so that pggate never reads a file while it is being written."""
    result = Storm()
    start = time.monotonic()
    tail.skip_to_end()
    for i, (kind, valid) in enumerate(schedule(count)):
        time.sleep(max(0.0, start + i * seconds / count - time.monotonic()))
        files.write(kind, valid)
        os.kill(gate_pid, signal.SIGHUP)
        result.sighups += 1
        got = verdict(tail.until_verdict(VERDICT_TIMEOUT))
        result.verdicts[got] = result.verdicts.get(got, 0) + 1
        want = expected_verdict(kind, valid)
        if got != want:
            result.wrong.append(
                f"SIGHUP {i + 1} ({'valid' if valid else 'broken'} {kind}): {got}, not {want}"
            )
        if result.verdicts.get("no verdict", 0) >= MAX_SILENT:
            result.wrong.append(f"storm stopped: {MAX_SILENT} reloads without a verdict")
            break
    result.seconds = time.monotonic() - start
    return result


# --------------------------------------------------------------------------- afterwards


def login_refusal(conninfo: str) -> str | None:
    """None when the login succeeds, else its error."""
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def check_hba(conninfo: str, generation: int) -> list[str]:
    """The last valid pg_hba.conf refuses storm_probe_GEN; the one before refused GEN - 1,
    which the last one lets through (the role exists, so that login succeeds)."""
    probes = [f"storm_probe_{generation}", f"storm_probe_{generation - 1}"]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role in probes:
            conn.execute(f"drop role if exists {role}")
            conn.execute(f"create role {role} login")
    try:
        last = login_refusal(f"{conninfo} user={probes[0]}")
        before = login_refusal(f"{conninfo} user={probes[1]}")
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for role in probes:
                conn.execute(f"drop role if exists {role}")
    problems = []
    if last is None or "pg_hba.conf rejects connection" not in last:
        problems.append(
            f"pg_hba.conf {generation} (the last valid) not in force: "
            f"{probes[0]} {last or 'logged in'}"
        )
    if before is not None:
        problems.append(
            f"pg_hba.conf {generation - 1} still in force: {probes[1]} refused ({before[:120]})"
        )
    return problems


def tls_to_pggate(
    port: int, ca: Path, client: Path | None = None
) -> tuple[ssl.SSLSocket, socket.socket]:
    """SSLRequest, then a TLS handshake (server verified against ``ca``), with ``client``'s
    certificate when given."""
    raw = socket.create_connection(("127.0.0.1", port), 5)
    raw.sendall(SSL_REQUEST)
    if raw.recv(1) != b"S":
        raw.close()
        raise RuntimeError("pggate refused SSLRequest")
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["postgresql"])
    if client is not None:
        ctx.load_cert_chain(client)
    return ctx.wrap_socket(raw), raw


def served_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate pggate presents to a new client."""
    tls, raw = tls_to_pggate(port, ca)
    with raw, tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def client_cert_outcome(port: int, ca: Path, client: Path) -> str:
    """ "accepted" (pggate answers the StartupMessage) or the TLS error that refused it (a
    revoked certificate: alert certificate_revoked, from the handshake or the first read)."""
    try:
        tls, raw = tls_to_pggate(port, ca, client)
        with raw, tls:
            tls.sendall(startup(user="postgres", database="postgres"))
            first = tls.recv(1)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted" if first in (b"R", b"E") else f"answer {first!r}"


def check_tls(port: int, files: Files) -> list[str]:
    problems = []
    cert_gen, crl_gen = files.generation["cert"], files.generation["crl"]
    serial = served_serial(port, files.ca_path)
    if serial != files.cert_serials[cert_gen]:
        which = [g for g, s in files.cert_serials.items() if s == serial]
        problems.append(
            f"certificate {cert_gen} (the last valid) not served; got generation {which or '?'}"
        )
    revoked = client_cert_outcome(port, files.ca_path, files.revoked[crl_gen])
    if "revoked" not in revoked:
        problems.append(f"CRL {crl_gen} (the last valid) not in force: its client cert {revoked}")
    if crl_gen > 1:
        earlier = client_cert_outcome(port, files.ca_path, files.revoked[crl_gen - 1])
        if earlier != "accepted":
            problems.append(f"CRL {crl_gen - 1} still in force: its client cert {earlier}")
    return problems


# --------------------------------------------------------------------------- the scenario


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storm-sighups", type=int, help="quick 40, full 200 (rounded up to even)")
    p.add_argument("--storm-seconds", type=float, help="quick 4, full 20")
    p.add_argument("--storm-sessions", type=int, help="COPY sessions: quick 10, full 50")


def set_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.storm_sighups = args.storm_sighups or (40 if quick else 200)
    args.storm_sighups += args.storm_sighups % 2
    args.storm_seconds = args.storm_seconds or (4 if quick else 20)
    args.storm_sessions = args.storm_sessions or (10 if quick else 50)


def client_conninfo(port: int, ca: Path, user: str = "postgres") -> str:
    """libpq over TLS, the server verified against the storm's CA (sslrootcert + require)."""
    return (
        f"host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=require "
        f"sslrootcert={ca} gssencmode=disable connect_timeout=5"
    )


def wait_streaming(sessions: list[Session], timeout: float) -> None:
    """Until every session has done a round trip (or broken), so the storm meets them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.rounds or s.error for s in sessions):
            return
        time.sleep(0.05)


def session_problems(sessions: list[Session], before: list[int], stuck: int) -> list[str]:
    problems = []
    broken = [s for s in sessions if s.error]
    if broken:
        first = broken[0]
        problems.append(f"{len(broken)} sessions broken, e.g. #{first.index}: {first.error}")
    mismatched = sum(s.mismatches for s in sessions)
    if mismatched:
        problems.append(f"{mismatched} COPY round trips read back other bytes than were sent")
    idle = [s.index for s, n in zip(sessions, before, strict=True) if s.rounds <= n]
    if idle:
        problems.append(f"{len(idle)} sessions made no COPY round trip during the storm")
    if stuck:
        problems.append(f"{stuck} sessions still stuck 60 s after the storm")
    return problems


def storm_problems(result: Storm, files: Files) -> list[str]:
    problems = []
    if result.wrong:
        problems.append(
            f"{len(result.wrong)} reloads got the wrong verdict, e.g. {result.wrong[0]}"
        )
    broken = sum(files.broken_written.values())
    rejected = result.verdicts.get("rejected", 0) + result.verdicts.get("TLS kept", 0)
    if rejected != broken:
        problems.append(f"{rejected} reloads rejected for {broken} broken files")
    return problems


def after_checks(port: int, files: Files, timeout: float = 60.0) -> list[str]:
    """The last valid configuration is in force (see the module docstring); in a thread, so
    that a pggate that accepts but no longer answers fails the row instead of hanging it."""
    found = [f"checking the configuration in force: no answer within {timeout:g} s"]

    def check() -> None:
        try:
            conninfo = client_conninfo(port, files.ca_path)
            found[:] = check_hba(conninfo, files.generation["hba"]) + check_tls(port, files)
        except Exception as exc:  # a check that cannot even run fails the scenario
            found[:] = [f"checking the configuration in force: {type(exc).__name__}: {exc}"]

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(timeout)
    return list(found)


def join_all(threads: list[threading.Thread], timeout: float) -> int:
    """Wait for the session threads, ``timeout`` seconds in all; returns how many still run
    (stuck in a COPY that pggate no longer relays: daemon threads, freed when pggate stops)."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for thread in threads)


def run(env: Env, args: argparse.Namespace) -> Row:
    count, seconds, clients = args.storm_sighups, args.storm_seconds, args.storm_sessions
    files = make_files(env.base / f"{NAME}-tls", env.base / NAME / "pggate" / "pg_hba.conf")
    with env.pggate(NAME, files.settings()) as gate:
        conninfo = client_conninfo(gate.port, files.ca_path)
        canary = Canary(conninfo)
        sessions = [Session(i, conninfo) for i in range(clients)]
        stop = threading.Event()
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in sessions]
        log(f"{NAME}: {count} SIGHUPs in {seconds:g} s, {clients} sessions streaming COPY")
        with canary.running():
            for thread in threads:
                thread.start()
            wait_streaming(sessions, 30)
            before = [s.rounds for s in sessions]
            result = storm(gate.proc.pid, files, LogTail(gate.log_path), count, seconds)
            time.sleep(0.5)
            stop.set()
            stuck = join_all(threads, 60)
        problems = session_problems(sessions, before, stuck) + storm_problems(result, files)
        problems += after_checks(gate.port, files)
        if not gate.alive_same():
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        if canary.failures:
            problems.append(f"canary: {canary.failures[0]}")
        if not canary.logins:
            problems.append("no canary login at all")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    sent = sum(s.bytes_in for s in sessions)
    received = sum(s.bytes_out for s in sessions)
    broken_files = ", ".join(f"{n} {kind}" for kind, n in files.broken_written.items())
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(result.verdicts.items()))
    return Row(
        NAME,
        f"{result.sighups} SIGHUPs in {result.seconds:.1f} s "
        f"({result.sighups - sum(files.broken_written.values())} valid, broken: {broken_files}); "
        f"{clients} TLS sessions streaming COPY: {sum(s.rounds for s in sessions):,} round "
        f"trips, {sent / 2**20:.1f} MiB in, {received / 2**20:.1f} MiB out",
        f"{sum(bool(s.error) for s in sessions)} of {clients} sessions broken, "
        f"{sum(s.mismatches for s in sessions)} checksum mismatches, {sent - received:,} bytes "
        f"lost; reload verdicts: {verdicts}; {canary.lost()}",
        canary.latency(),
        problems,
    )
