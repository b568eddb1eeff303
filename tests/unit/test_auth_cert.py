"""Client-certificate rules of pg_hba.conf (auth/cert.py), table-driven without sockets."""

from __future__ import annotations

import pytest
from test_hba_fakes import FakeFiles

from pggate.auth import cert
from pggate.hba import HbaRule, IdentMaps, load_hba, load_ident
from pggate.proto.errors import ClientError

DN = "CN=ssltestuser-dn,OU=Testing,OU=Engineering,O=PGDG"
GOOD = cert.PeerCertificate(verified=True, common_name="ssltestuser", distinguished_name=DN)


def rule(line: str) -> HbaRule:
    files = FakeFiles({"/gw/pg_hba.conf": line + "\n"})
    return load_hba("/gw/pg_hba.conf", files, ssl_enabled=True, warn=lambda _: None).rules[0]


def ident(text: str) -> IdentMaps:
    return load_ident("/gw/pg_ident.conf", FakeFiles({"/gw/pg_ident.conf": text}), warn=print)


def failure(call: object, *args: object) -> ClientError:
    with pytest.raises(ClientError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_plain_rule_needs_nothing() -> None:
    cert.check_before_auth(rule("hostssl all all 127.0.0.1/32 trust"), None, ca_loaded=False)


@pytest.mark.parametrize(
    "line",
    [
        "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca",
        "hostssl all all 127.0.0.1/32 trust clientcert=verify-full",
        "hostssl all all 127.0.0.1/32 cert",
    ],
)
def test_certificate_lines_need_a_ca_and_a_verified_certificate(line: str) -> None:
    err = failure(cert.check_before_auth, rule(line), GOOD, False)
    assert (err.sqlstate, err.message) == (
        "F0000",
        "client certificates can only be checked if a root certificate store is available",
    )
    err = failure(cert.check_before_auth, rule(line), None, True)
    assert (err.sqlstate, err.message) == (
        "28000",
        "connection requires a valid client certificate",
    )
    unverified = cert.PeerCertificate(False, "ssltestuser", DN)
    assert failure(cert.check_before_auth, rule(line), unverified, True).sqlstate == "28000"
    cert.check_before_auth(rule(line), GOOD, ca_loaded=True)


def test_cert_method_maps_the_common_name() -> None:
    line = rule("hostssl all all 127.0.0.1/32 cert")
    cert.check_name(line, GOOD, "ssltestuser", IdentMaps())
    err = failure(cert.check_name, line, GOOD, "anotheruser", IdentMaps())
    assert (err.sqlstate, err.message) == (
        "28000",
        'certificate authentication failed for user "anotheruser"',
    )
    assert err.log_detail is not None and "do not match" in err.log_detail


def test_cert_method_with_dn_and_a_regex_map() -> None:
    maps = ident('dnre "/^.*OU=Testing,.*$" ssltestuser\ndn "' + DN + '" ssltestuser\n')
    for name in ("dnre", "dn"):
        line = rule(f"hostssl all all 127.0.0.1/32 cert clientname=DN map={name}")
        cert.check_name(line, GOOD, "ssltestuser", maps)
        assert failure(cert.check_name, line, GOOD, "other", maps).message.startswith(
            "certificate authentication failed"
        )


def test_verify_full_mismatch_reports_the_method_failure() -> None:
    line = rule("hostssl all all 127.0.0.1/32 trust clientcert=verify-full")
    err = failure(cert.check_name, line, GOOD, "anotheruser", IdentMaps())
    assert err.message == '"trust" authentication failed for user "anotheruser"'
    assert err.log_detail == (
        'certificate validation (clientcert=verify-full) failed for user "anotheruser": CN mismatch'
    )
    scram = rule("hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full")
    err = failure(cert.check_name, scram, GOOD, "anotheruser", IdentMaps())
    assert (err.sqlstate, err.message) == (
        "28P01",
        'password authentication failed for user "anotheruser"',
    )


def test_verify_ca_does_not_check_the_name() -> None:
    line = rule("hostssl all all 127.0.0.1/32 trust clientcert=verify-ca")
    cert.check_name(line, GOOD, "anyone", IdentMaps())


def test_certificate_without_a_name() -> None:
    line = rule("hostssl all all 127.0.0.1/32 cert")
    nameless = cert.PeerCertificate(True, None, "")
    err = failure(cert.check_name, line, nameless, "ssltestuser", IdentMaps())
    assert err.log_detail is not None and "contains no user name" in err.log_detail
    assert cert.authenticated_identity(GOOD) == DN
