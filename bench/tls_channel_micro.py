"""Microbenchmark of the sans-IO TLS channel: µs per round trip through memory.

A round trip is client.encrypt -> server.feed -> server.encrypt -> client.feed, i.e. the
relay's per-message work on both ends (two encryptions, two decryptions).  Run:
``python bench/tls_channel_micro.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import datetime
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pggate.tls.context import TlsSettings, build_server_context
from pggate.transport.tls import TlsChannel


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def pair(directory: Path) -> tuple[TlsChannel, TlsChannel]:
    cert, key = self_signed(directory)
    server_ctx = build_server_context(
        TlsSettings(str(cert), str(key)), reloading=False, prompt=None
    )
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=str(cert))
    client_ctx.set_alpn_protocols(["postgresql"])
    client = TlsChannel(client_ctx, server_side=False, server_hostname="localhost")
    server = TlsChannel(server_ctx)
    for _ in range(10):
        out, client_done = client.handshake()
        server.feed(out)
        out, server_done = server.handshake()
        client.feed(out)
        if client_done and server_done:
            return client, server
    raise RuntimeError("handshake did not finish")


def round_trips(client: TlsChannel, server: TlsChannel, size: int, seconds: float) -> float:
    """µs per round trip of ``size`` plaintext bytes each way (best of 5 runs)."""
    payload = b"x" * size
    c_enc, c_feed, s_enc, s_feed = client.encrypt, client.feed, server.encrypt, server.feed
    n = 10
    while True:  # calibrate to ~seconds/5 per run
        start = time.perf_counter()
        for _ in range(n):
            assert len(c_feed(s_enc(s_feed(c_enc(payload))))) == size
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5 / 4:
            break
        n *= 4
    n = max(int(n * (seconds / 5) / elapsed), 10)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            c_feed(s_enc(s_feed(c_enc(payload))))
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client, server = pair(Path(tmp))
        print(f"{ssl.OPENSSL_VERSION}; {server.version} {server.cipher}")
        for label, size in (("100 B", 100), ("64 KiB", 65536)):
            us = round_trips(client, server, size, args.seconds)
            rate = 2 * size / us  # bytes per µs = MB/s, both directions
            print(f"{label:>7} round trip: {us:8.2f} µs  ({rate:7.1f} MB/s through both ends)")


if __name__ == "__main__":
    main()
