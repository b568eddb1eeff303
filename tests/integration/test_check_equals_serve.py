"""``pggate check`` and ``pggate serve`` agree on broken directories.

For each broken directory below, ``serve`` must exit non-zero without listening, and ``check``
must exit non-zero and print every problem line that ``serve`` logged, with the same text. Each
case also names the text it must contain, so a case that broke for another reason fails.
The first cases are the findings of the fail-closed issue: check said OK where serve exited.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import free_port
from tls_support import Pki, install_server_cert, make_pki

from pggate.tls import certs

Setup = Callable[[Path, Pki], None]

LOG_LINE = re.compile(r"^\S+ \S+ UTC \[\d+\] (?:LOG|FATAL|ERROR|WARNING|DETAIL|HINT):  (.*)$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_dir(directory: Path, pki: Pki) -> None:
    install_server_cert(directory, pki.server_cn_only)


def _missing_cert(directory: Path, pki: Pki) -> None:
    _tls_dir(directory, pki)
    (directory / "server.crt").unlink()


def _world_readable_key(directory: Path, pki: Pki) -> None:
    _tls_dir(directory, pki)
    (directory / "server.key").chmod(0o644)


def _mismatched_key(directory: Path, pki: Pki) -> None:
    _tls_dir(directory, pki)
    certs.write_key(directory / "server.key", certs.generate_key())


def _nothing(directory: Path, pki: Pki) -> None:
    pass


# (name, pggate.conf lines, pg_hba.conf, setup, texts check and serve must both show)
CASES: list[tuple[str, str, str, Setup, list[str]]] = [
    (
        "missing ssl_cert_file",
        "ssl = on\n",
        "host all all 127.0.0.1/32 trust\n",
        _missing_cert,
        ['could not load server certificate file "'],
    ),
    (
        "key readable by others",
        "ssl = on\n",
        "host all all 127.0.0.1/32 trust\n",
        _world_readable_key,
        ["has group or world access"],
    ),
    (
        "unknown ssl_groups",
        "ssl = on\nssl_groups = 'bogus'\n",
        "host all all 127.0.0.1/32 trust\n",
        _tls_dir,
        ["could not set group names specified in ssl_groups"],
    ),
    (
        "key does not match certificate",
        "ssl = on\n",
        "host all all 127.0.0.1/32 trust\n",
        _mismatched_key,
        ["private key"],
    ),
    (
        "bad ssl_ciphers",
        "ssl = on\nssl_ciphers = 'NO-SUCH-CIPHER'\n",
        "host all all 127.0.0.1/32 trust\n",
        _tls_dir,
        ["could not set the TLSv1.2 cipher list"],
    ),
    (
        "protocol range upside down",
        "ssl = on\nssl_min_protocol_version = 'TLSv1.3'\nssl_max_protocol_version = 'TLSv1.2'\n",
        "host all all 127.0.0.1/32 trust\n",
        _tls_dir,
        ["could not set SSL protocol version range"],
    ),
    (
        "missing ssl_ca_file",
        "ssl = on\nssl_ca_file = 'no-such-root.crt'\n",
        "host all all 127.0.0.1/32 trust\n",
        _tls_dir,
        ["no-such-root.crt"],
    ),
    (
        "two bad pg_hba.conf lines",
        "",
        "host all all 127.0.0.1/32 trust\nhots all all 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 nosuchmethod\n",
        _nothing,
        [
            'invalid connection type "hots", line 2 of configuration file',
            'invalid authentication method "nosuchmethod", line 3 of configuration file',
        ],
    ),
    (
        "two bad pggate.conf values",
        "port = 99999\nno_such_parameter = 1\n",
        "host all all 127.0.0.1/32 trust\n",
        _nothing,
        [
            'is outside the valid range for parameter "port"',
            'unrecognized configuration parameter "no_such_parameter"',
        ],
    ),
    (
        "gss line without a keytab",
        "",
        "host all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 gss\n",
        _nothing,
        ['authentication method "gss" requires krb_server_keyfile to be set, line 2'],
    ),
    (
        "backend TLS without its root certificate",
        "backend = 'host=127.0.0.1 port=5432 sslmode=verify-full sslrootcert=/r.crt'\n",
        "host all all 127.0.0.1/32 trust\n",
        _nothing,
        ['invalid value for parameter "backend": root certificate file "/r.crt" does not exist'],
    ),
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _problem_lines(text: str) -> list[str]:
    """The message part of each log line (timestamps and PIDs differ between runs)."""
    lines = []
    for raw in text.splitlines():
        match = LOG_LINE.match(raw)
        if match:
            lines.append(match.group(1))
    return lines


@pytest.mark.parametrize(
    ("conf", "hba", "setup", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_check_reports_what_serve_dies_of(
    tmp_path: Path, pki: Pki, conf: str, hba: str, setup: Setup, expected: list[str]
) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    port = free_port()
    backend = "" if "backend" in conf else "backend = 'host=/nonexistent port=5432'\n"
    (directory / "pggate.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nport = {port}\n{backend}{conf}"
    )
    (directory / "pg_hba.conf").write_text(hba)
    (directory / "pg_ident.conf").write_text("")
    setup(directory, pki)

    served = _run("serve", str(directory))
    assert served.returncode != 0, served.stderr
    assert "ready to accept connections" not in served.stderr
    checked = _run("check", str(directory))
    assert checked.returncode != 0, checked.stdout
    for text in expected:
        assert text in served.stderr, served.stderr
        assert text in checked.stderr, checked.stderr
    # Every problem serve logged (its closing FATAL summary aside) is in check's output.
    summary = ("could not load ", "configuration file ")
    for line in _problem_lines(served.stderr):
        if line.startswith(summary) and line.endswith(("contains errors", "pg_hba.conf")):
            continue
        assert line in checked.stderr, f"serve said {line!r}; check said:\n{checked.stderr}"
