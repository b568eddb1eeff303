"""pggate installed without the extra pggate[gss]: python-gssapi cannot be imported.

Every pggate process here runs with a ``gssapi`` package first on PYTHONPATH whose import
fails (and leaves a mark in a file): plain and TLS logins work and GSSENCRequest is answered
``N`` without python-gssapi ever being imported; a ``gss`` pg_hba.conf line and a
``krb_server_keyfile`` are configuration errors, as in PostgreSQL built without GSSAPI, with
a HINT naming the extra.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from conftest import Backend, GatewayFactory, prepare_gateway_dir, read_all, startup_packet
from test_shutdown_tls import tls_gateway

from pggate import gss_support
from pggate.proto import codec, codes

pytestmark = pytest.mark.integration

GSS_LINE_ERROR = 'invalid authentication method "gss": not supported by this build'
HOSTGSSENC_WARNING = "hostgssenc record cannot match because GSSAPI is not supported by this build"
HINT_LINE = f"HINT:  {gss_support.HINT}"
REFUSE = codes.ENCRYPTION_REFUSE


@pytest.fixture
def no_gssapi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make python-gssapi unimportable for the pggate processes started from now on; returns
    the file each attempt to import it appends to."""
    shadow = tmp_path / "no-gssapi"
    (shadow / "gssapi").mkdir(parents=True)
    attempts = tmp_path / "gssapi-imports"
    (shadow / "gssapi" / "__init__.py").write_text(
        textwrap.dedent(
            f"""\
            with open({str(attempts)!r}, "a") as log:
                log.write("import gssapi\\n")
            raise ImportError("No module named 'gssapi' (pggate installed without [gss])")
            """
        )
    )
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), path])))
    return attempts


def pggate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggate", *args], capture_output=True, text=True, timeout=60
    )


def test_plain_tls_and_gssencrequest_without_gssapi(
    no_gssapi: Path, make_gateway: GatewayFactory
) -> None:
    gateway = tls_gateway(
        make_gateway, "hostgssenc all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n"
    )
    # The hostgssenc line loaded with PostgreSQL's warning (and the HINT): it cannot match.
    log = gateway.log()
    assert HOSTGSSENC_WARNING in log and HINT_LINE in log

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(codec.gssenc_request())
        assert read_all(sock, until=REFUSE)[:1] == REFUSE
        # As after N from PostgreSQL: the client goes on in the clear on the same connection.
        sock.sendall(startup_packet(user="postgres", database="postgres"))
        reply = read_all(sock, until=codec.ready_for_query(b"I"))
    assert reply.startswith(codec.authentication_ok()), reply

    with psycopg.connect(gateway.dsn()) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    with psycopg.connect(gateway.dsn(sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    # gssencmode=prefer is libpq's default: it falls back to the N answer's plain path.
    with psycopg.connect(gateway.dsn(gssencmode="prefer")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    # pg_hba.conf had a hostgssenc line, so pggate asked once whether GSSAPI is there.
    assert no_gssapi.read_text() == "import gssapi\n"


def test_no_gss_in_the_configuration_never_imports_gssapi(
    no_gssapi: Path, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(codec.gssenc_request())
        assert read_all(sock, until=REFUSE)[:1] == REFUSE
    with psycopg.connect(gateway.dsn()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert not no_gssapi.exists()


@pytest.mark.parametrize(
    ("hba", "conf", "message", "where"),
    [
        (
            "host all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 gss\n",
            "",
            GSS_LINE_ERROR,
            'line 2 of configuration file "{directory}/pg_hba.conf"',
        ),
        (
            "host all all 127.0.0.1/32 trust\n",
            "krb_server_keyfile = 'krb5.keytab'\n",
            gss_support.KEYFILE_MESSAGE,
            # prepare_gateway_dir writes four lines before ``conf``.
            'line 5 of configuration file "{directory}/pggate.conf"',
        ),
    ],
    ids=["gss-line", "krb_server_keyfile"],
)
def test_gss_configuration_is_an_error(
    no_gssapi: Path,
    backend: Backend,
    tmp_path: Path,
    hba: str,
    conf: str,
    message: str,
    where: str,
) -> None:
    directory = tmp_path / "gw"
    prepare_gateway_dir(directory, backend, hba=hba, conf=conf)
    expected = f"{message}, {where.format(directory=directory)}"

    checked = pggate("check", str(directory))
    assert checked.returncode != 0
    assert expected in checked.stderr, checked.stderr
    assert HINT_LINE in checked.stderr, checked.stderr

    served = pggate("serve", str(directory))  # exits at once: nothing is listened on
    assert served.returncode != 0
    assert expected in served.stderr, served.stderr
    assert HINT_LINE in served.stderr, served.stderr
    assert "ready to accept connections" not in served.stderr


def test_reload_keeps_the_rules_when_a_gss_line_appears(
    no_gssapi: Path, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway()
    gateway.write_hba("host all all 127.0.0.1/32 gss\n")
    gateway.reload(expect="configuration files were not reloaded")
    assert GSS_LINE_ERROR in gateway.log() and HINT_LINE in gateway.log()
    with psycopg.connect(gateway.dsn()) as conn:  # the trust line is still in force
        assert conn.execute("select current_user").fetchone() == ("postgres",)
