"""Microbenchmark of the sans-IO TLS channel: µs per round trip through memory.

A round trip is client.encrypt -> server.feed -> server.encrypt -> client.feed, i.e. the
relay's per-message work on both ends (two encryptions, two decryptions).  Run:
``python bench/tls_channel_micro.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

from pggate.transport.tls import TlsChannel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from conftest_tls import CertFactory, connect  # the TLS unit tests' certificates and handshake


def pair(directory: Path) -> tuple[TlsChannel, TlsChannel]:
    """A client and a server channel (ALPN postgresql) after their handshake, with a server
    certificate for ``localhost`` issued by a CA made in ``directory``."""
    factory = CertFactory(directory)
    return connect(factory.server_context(), factory.client_context())


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
