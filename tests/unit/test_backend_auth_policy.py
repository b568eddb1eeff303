"""pggate's backend login under libpq's channel_binding / require_auth rules, paired with
pggate's own server-side SCRAM (auth/password.py) so both halves are real code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import pytest

from pggate.auth.password import Failure, ScramExchange, Send, Success
from pggate.auth.verifiers import RoleSecret
from pggate.conninfo import validate as conninfo_validate
from pggate.proto import codec, codes
from pggate.proto.backend import (
    AuthPolicy,
    BackendLogin,
    LinkSecurity,
    LoginComplete,
    RequireAuth,
)
from pggate.proto.errors import ClientError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CERT_HASH = hashlib.sha256(b"the backend's certificate").digest()
TLS = LinkSecurity(tls=True, end_point_hash=CERT_HASH)
READY = codec.backend_key_data(7, b"k" * 4) + codec.ready_for_query(codes.TX_IDLE)


def role(password: str, iterations: int = 4096) -> tuple[RoleSecret, tuple[bytes, bytes]]:
    """A pg_authid SCRAM secret and its (ClientKey, ServerKey), by the RFC 5802 recipe."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    text = (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
        f"{b64(stored).decode()}:{b64(server_key).decode()}"
    )
    return RoleSecret("alice", text, None, True), (client_key, server_key)


def secret_for(password: str, iterations: int = 4096) -> RoleSecret:
    return role(password, iterations)[0]


def requirement(text: str) -> RequireAuth:
    model = conninfo_validate.require_auth(text)
    return RequireAuth.from_methods(
        text, model.methods, allow_none=model.allow_none, names_password=model.names_password
    )


def pair(client: BackendLogin, server_hash: bytes | None, secret: RoleSecret) -> LoginComplete:
    """Run the SCRAM exchange between the two machines; raise what the client raises."""
    server = ScramExchange(
        "alice", secret, now=NOW, tls_end_point_hash=server_hash, mock_nonce=b"n" * 16
    )
    to_client = server.start()
    while True:
        reply, outcome = client.receive(to_client)
        if outcome is not None:
            assert isinstance(outcome, LoginComplete)
            return outcome
        kind, body = reply[:1], reply[5:]
        result = server.receive(kind, body)
        if isinstance(result, Failure):
            raise result.error
        if isinstance(result, Success):
            to_client = result.final + codec.authentication_ok() + READY
        else:
            assert isinstance(result, Send)
            to_client = result.data


def client(**kw: object) -> BackendLogin:
    return BackendLogin(user="alice", parameters={}, password="pencil", **kw)  # type: ignore[arg-type]


def test_tls_with_a_plus_offer_binds_to_the_backend_certificate() -> None:
    login = client(link=TLS)
    pair(login, CERT_HASH, secret_for("pencil"))
    assert login._scram is not None and login._scram.bound


def test_binding_to_another_certificate_fails_the_servers_check() -> None:
    login = client(link=LinkSecurity(tls=True, end_point_hash=b"x" * 32))
    with pytest.raises(ClientError):
        pair(login, CERT_HASH, secret_for("pencil"))


def test_channel_binding_disable_uses_plain_scram_over_tls() -> None:
    login = client(link=TLS, policy=AuthPolicy(channel_binding="disable"))
    pair(login, CERT_HASH, secret_for("pencil"))
    assert login._scram is not None and not login._scram.bound


def test_channel_binding_require_without_tls_is_refused_with_libpqs_text() -> None:
    login = client(policy=AuthPolicy(channel_binding="require"))
    with pytest.raises(ClientError) as info:
        pair(login, None, secret_for("pencil"))
    assert info.value.log_detail == "channel binding required, but SSL not in use"


def test_channel_binding_require_refuses_a_server_without_plus() -> None:
    login = client(link=TLS, policy=AuthPolicy(channel_binding="require"))
    with pytest.raises(ClientError) as info:
        pair(login, None, secret_for("pencil"))  # the server offers SCRAM-SHA-256 only
    assert info.value.log_detail == (
        "channel binding is required, but server did not offer an authentication method "
        "that supports channel binding"
    )


def test_channel_binding_require_refuses_trust() -> None:
    login = client(link=TLS, policy=AuthPolicy(channel_binding="require"))
    with pytest.raises(ClientError) as info:
        login.receive(codec.authentication_ok())
    assert info.value.log_detail == (
        "channel binding required, but server authenticated client without channel binding"
    )


def test_channel_binding_require_refuses_md5() -> None:
    login = client(link=TLS, policy=AuthPolicy(channel_binding="require"))
    with pytest.raises(ClientError) as info:
        login.receive(codec.authentication_request(codes.AUTH_MD5_PASSWORD, b"salt"))
    assert info.value.log_detail == (
        "channel binding required but not supported by server's authentication request"
    )


def test_plus_offered_without_tls_is_refused() -> None:
    login = client()
    offer = codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256-PLUS\0\0")
    with pytest.raises(ClientError) as info:
        login.receive(offer)
    assert info.value.log_detail == (
        "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection"
    )


@pytest.mark.parametrize(
    ("setting", "request_code", "reason"),
    [
        ("scram-sha-256", codes.AUTH_MD5_PASSWORD, "server requested a hashed password"),
        ("md5", codes.AUTH_CLEARTEXT_PASSWORD, "server requested a cleartext password"),
        ("!password", codes.AUTH_CLEARTEXT_PASSWORD, "server requested a cleartext password"),
        ("password", codes.AUTH_GSS, "server requested GSSAPI authentication"),
        ("md5", codes.AUTH_SASL, "server requested SASL authentication"),
        ("scram-sha-256", codes.AUTH_OK, "server did not complete authentication"),
        ("!none", codes.AUTH_OK, "server did not complete authentication"),
    ],
)
def test_require_auth_refusals_use_libpqs_text(
    setting: str, request_code: int, reason: str
) -> None:
    login = client(policy=AuthPolicy(require_auth=requirement(setting)))
    with pytest.raises(ClientError) as info:
        login.receive(codec.authentication_request(request_code, b"salt"))
    assert info.value.log_detail == (
        f'authentication method requirement "{setting}" failed: {reason}'
    )
    assert info.value.sqlstate == "08006"


@pytest.mark.parametrize("setting", ["none", "!scram-sha-256", "md5,none", "!password"])
def test_require_auth_that_allows_trust(setting: str) -> None:
    login = client(policy=AuthPolicy(require_auth=requirement(setting)))
    _, outcome = login.receive(codec.authentication_ok() + READY)
    assert isinstance(outcome, LoginComplete)


def test_require_auth_scram_accepts_a_completed_exchange() -> None:
    login = client(policy=AuthPolicy(require_auth=requirement("scram-sha-256")))
    pair(login, None, secret_for("pencil"))


def test_no_cleartext_password_over_plain_tcp_unless_named() -> None:
    cleartext = codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD)
    with pytest.raises(ClientError) as info:
        client().receive(cleartext)
    assert info.value.log_detail is not None
    assert "cleartext password over an unencrypted connection" in info.value.log_detail
    assert "pencil" not in info.value.log_detail
    allowed = client(policy=AuthPolicy(require_auth=requirement("password")))
    reply, _ = allowed.receive(cleartext)
    assert reply == codec.password_message(b"pencil\0")
    for link in (TLS, LinkSecurity(local=True)):
        reply, _ = client(link=link).receive(cleartext)
        assert reply == codec.password_message(b"pencil\0")


def test_iteration_cap_refuses_before_running_hi() -> None:
    login = client(policy=AuthPolicy(max_iterations=10_000))
    with pytest.raises(ClientError) as info:
        pair(login, None, secret_for("pencil", iterations=20_000))
    assert info.value.log_detail == (
        "server asked for 20000 SCRAM iterations, more than backend_scram_max_iterations (10000)"
    )
    pair(client(policy=AuthPolicy(max_iterations=20_000)), None, secret_for("pencil", 20_000))


def test_pass_through_keys_ignore_the_cap() -> None:
    secret, keys = role("pencil", iterations=50_000)
    login = BackendLogin(
        user="alice", parameters={}, scram_keys=keys, policy=AuthPolicy(max_iterations=10), link=TLS
    )
    pair(login, CERT_HASH, secret)
