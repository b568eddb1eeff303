"""Runs the pg_hba.conf line's authentication method against the client (auth.c's
ClientAuthentication), driving the sans-IO exchanges of :mod:`pggate.auth`.

The result says what to send before AuthenticationOk (SASLFinal, a last GSS token) and what to
log; a failure is raised as the ClientError the method's exchange produced.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pggate.auth import cert, password, verifiers
from pggate.config import Config
from pggate.errors import ClientError, SilentClose
from pggate.hba import HbaRule
from pggate.proto import codec, codes
from pggate.proto.messages import StartupMessage
from pggate.server import catalog, facts
from pggate.transport import Channel, GssError

if TYPE_CHECKING:
    from gssapi.raw.creds import Creds

    from pggate.policy import GssState, Policy, Snapshot

log = logging.getLogger("pggate.auth")

PASSWORD_METHODS = frozenset({"password", "md5", "scram-sha-256"})
IMPLEMENTED_METHODS = frozenset({"trust", "cert", "gss"}) | PASSWORD_METHODS
# Room for the type byte's message: the largest token plus its length word.
MAX_RESPONSE_LENGTH = codes.MAX_AUTH_TOKEN_LENGTH + 4


class ClientConversation(Protocol):
    """What an exchange needs from the session: send, and read one typed message."""

    channel: Channel

    def send(self, data: bytes) -> None: ...

    async def read_message(self, max_length: int) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True, slots=True)
class AuthResult:
    before_ok: bytes = b""  # SASLFinal or a final GSS token, sent just before AuthenticationOk
    gss_authenticated: bool = False
    gss_principal: str | None = None
    gss_delegated: bool = False
    scram_keys: tuple[bytes, bytes] | None = None  # ClientKey, ServerKey (SCRAM pass-through)


class MockNonce:
    """The per-gateway secret behind mock SCRAM salts (auth-scram.c mock_scram_secret).

    PostgreSQL keeps one in pg_control so an unknown role gets the same fake salt every time;
    pggate uses the backend's own when its role may read it, else a random one per process.
    """

    def __init__(self) -> None:
        self.value: bytes | None = None

    async def get(self, policy: Policy) -> bytes:
        if self.value is None:
            try:
                rows = await catalog.run_query(
                    policy.backend,
                    "SELECT mock_authentication_nonce FROM pg_catalog.pg_control_init()",
                )
                self.value = bytes.fromhex(str(rows[0][0]))
            except (ClientError, ValueError, IndexError):
                log.info("using a per-process mock authentication nonce")
                self.value = secrets.token_bytes(32)
        return self.value


def mock_iterations(cfg: Config, reported: Mapping[str, str]) -> int:
    """The iteration count a doomed SCRAM exchange advertises.

    PostgreSQL's mock secret uses the server's scram_iterations, so an unknown role looks like
    one whose verifier was made with the current setting (CVE-2026-14672 class). pggate's own
    scram_iterations wins when set; otherwise the backend's (reported at login, PostgreSQL 16+),
    else PostgreSQL's default.
    """
    if "scram_iterations" in cfg.explicitly_set:
        return cfg.scram_iterations
    text = reported.get("scram_iterations", "")
    if text.isascii() and text.isdigit() and 0 < int(text) < 2**31:
        return int(text)
    return cfg.scram_iterations


async def authenticate(
    client: ClientConversation,
    snapshot: Snapshot,
    rule: HbaRule,
    startup: StartupMessage,
    *,
    mock_nonce: MockNonce,
) -> AuthResult:
    """Run ``rule``'s method; returns what the session needs, raises the client's FATAL.

    What the channel established (certificate, SCRAM binding, GSS identity) comes from its
    :class:`~pggate.transport.ChannelInfo`. A failure's log DETAIL names the pg_hba.conf line,
    as auth.c auth_failed does.
    """
    policy = snapshot.policy
    info = client.channel.info
    try:
        method = str(rule.method)
        if method not in IMPLEMENTED_METHODS:
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION,
                f'authentication method "{method}" is not supported by this pggate build',
                log_detail=rule.log_detail,
            )
        peer = facts.peer_certificate(info)
        cert.check_before_auth(rule, peer, ca_loaded=bool(policy.config.ssl_ca_file))
        user = startup.user
        result = AuthResult()
        log_auth = "authentication" in policy.config.log_connections
        where = f"({rule.file}:{rule.line_number})"
        if method == "cert":
            assert peer is not None  # check_before_auth demanded a verified certificate
            if log_auth:
                identity = cert.authenticated_identity(peer)
                log.info('connection authenticated: identity="%s" method=cert %s', identity, where)
        elif method in PASSWORD_METHODS:
            binding = facts.scram_binding(info)
            result = await _password(client, policy, method, user, binding, mock_nonce)
            if log_auth:
                log.info(
                    'connection authenticated: identity="%s" method=%s %s', user, method, where
                )
        elif method == "gss":
            established = facts.gss_identity(info)
            result = await _gss(client, snapshot, rule, user, established, log_auth, where)
        elif log_auth:  # trust
            log.info('connection authenticated: user="%s" method=%s %s', user, method, where)
        if peer is not None:
            cert.check_name(rule, peer, user, policy.ident)
        return result
    except ClientError as err:
        if rule.log_detail not in (err.log_detail or ""):
            err.log_detail = "\n".join(filter(None, (err.log_detail, rule.log_detail)))
        raise


async def _password(
    client: ClientConversation,
    policy: Policy,
    method: str,
    user: str,
    tls_end_point_hash: bytes | None,
    mock_nonce: MockNonce,
) -> AuthResult:
    """password / md5 / scram-sha-256 with the verifier read from the backend's pg_authid."""
    reported: Mapping[str, str] = {}
    try:
        rows, reported = await catalog.run_query_reporting(
            policy.backend, verifiers.role_secret_sql(user)
        )
    except UnicodeEncodeError:
        rows = []  # a name the backend cannot hold is a role that does not exist
    secret = verifiers.parse_role_secret(rows)
    now = datetime.now(UTC)
    exchange = password.choose_exchange(
        method,
        user,
        secret,
        now=now,
        tls_end_point_hash=tls_end_point_hash,
        password_encryption=policy.config.password_encryption,
        mock_nonce=await mock_nonce.get(policy),
        mock_iterations=mock_iterations(policy.config, reported),
    )
    client.send(exchange.start())
    try:
        while True:
            kind, body = await client.read_message(MAX_RESPONSE_LENGTH)
            outcome = exchange.receive(kind, body)
            if isinstance(outcome, password.Send):
                client.send(outcome.data)
            elif isinstance(outcome, password.Failure):
                raise outcome.error
            else:
                keys = None
                if isinstance(exchange, password.ScramExchange) and exchange.client_key:
                    assert exchange.server_key is not None
                    keys = (exchange.client_key, exchange.server_key)
                return AuthResult(before_ok=outcome.final, scram_keys=keys)
    except codec.InvalidMessageLength as err:
        # A bad length word is pq_getmessage's EOF (logged as COMMERROR, never sent), and each
        # caller reacts its own way. It must not reach the session as a ClientError, which the
        # session sends: CheckSASLAuth returns STATUS_ERROR, an ordinary password failure (28P01);
        # recv_password_packet returns STATUS_EOF and the backend exits without a word.
        if isinstance(exchange, password.ScramExchange):
            raise cert.method_failure(exchange.method, user, log_detail=err.message) from None
        raise SilentClose(err.message) from None


async def _gss(
    client: ClientConversation,
    snapshot: Snapshot,
    rule: HbaRule,
    user: str,
    established: tuple[str, bool] | None,
    log_auth: bool,
    where: str,
) -> AuthResult:
    """gss: the encryption handshake already established the client's principal and
    delegation (``established``), or run the exchange."""
    # Imported here: python-gssapi loads only when a pg_hba.conf line asks for gss.
    from pggate.auth import gss as gss_auth

    cfg = snapshot.policy.config
    before_ok = b""
    if established is not None:
        principal, delegated = established
    else:
        exchange = gss_auth.GssAuthExchange(
            _acceptor(snapshot.gss, user), user=user, accept_delegation=cfg.gss_accept_delegation
        )
        client.send(exchange.start())
        while True:
            kind, body = await client.read_message(MAX_RESPONSE_LENGTH)
            outcome = exchange.receive(kind, body)
            if isinstance(outcome, gss_auth.Send):
                client.send(outcome.data)
                continue
            if isinstance(outcome, gss_auth.Failure):
                if outcome.output:
                    client.send(outcome.output)
                raise outcome.error
            principal, delegated, before_ok = outcome.principal, outcome.delegated, outcome.output
            break
    if log_auth:  # logged even if the map check below fails, as PostgreSQL does
        log.info('connection authenticated: identity="%s" method=gss %s', principal, where)
    gss_auth.authorize_gss_principal(
        principal,
        pg_user=user,
        include_realm=rule.include_realm,
        krb_realm=rule.krb_realm,
        usermap=rule.usermap,
        case_insensitive=cfg.krb_caseins_users,
        ident=snapshot.policy.ident,
    )
    return AuthResult(
        before_ok=before_ok,
        gss_authenticated=True,
        gss_principal=principal,
        gss_delegated=delegated,
    )


def _acceptor(gss: GssState, user: str) -> Creds | None:
    """The acceptor credentials of the snapshot's keytab (None: GSSAPI encryption is off, and
    the process's default acceptor is used, as before any keytab was named).

    A keytab GSSAPI cannot use (no keys in it) fails the method with the text and log DETAIL
    its first accept would produce, before AuthenticationGSS is sent rather than after the
    client's first token.
    """
    if gss.keytab is None:
        return None
    from pggate.transport import gss as gss_transport

    try:
        return gss_transport.acceptor_credentials(gss.keytab)
    except GssError as err:
        raise cert.method_failure(
            "gss", user, log_detail=f"accepting GSS security context failed: {err.detail}"
        ) from None


__all__ = ["AuthResult", "MockNonce", "authenticate"]
