"""Method ``gss``: the principal check and the unencrypted GSSAPI exchange (sans-IO).

Two pieces of PostgreSQL's ``auth.c`` (shared/protocol.md §3.4, §3.5):

* :func:`check_gss_principal` is ``pg_GSS_checkauth``: from the principal the GSSAPI context
  authenticated, optionally strip the realm (``include_realm=0``), compare the realm with
  ``krb_realm``, then map the name to the requested role through pg_ident.conf. It runs after
  either a GSS-encrypted handshake (no auth messages at all) or :class:`GssAuthExchange`.
* :class:`GssAuthExchange` is ``pg_GSS_recvauth``: ``AuthenticationGSS``, then GSSResponse
  (``p``) tokens answered by ``AuthenticationGSSContinue`` until the context is complete.

Every failure reaches the client as ``GSSAPI authentication failed for user "%s"`` (28000);
the reason goes to the server log only. The authenticated identity (the full principal) is
logged by the caller even when the map check fails, as PostgreSQL's ``set_authn_id`` does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pggate import gss_support
from pggate.auth.cert import method_failure
from pggate.hba import IdentMaps
from pggate.hba.methods import AuthMethod
from pggate.pgtext import ascii_lower
from pggate.proto import codec, codes
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import wire_str
from pggate.statetable import look_up
from pggate.transport.gss import gss_status_detail

# python-gssapi is the optional extra pggate[gss]. Without it this module still imports (the
# principal check needs none of it), and GssAuthExchange() refuses to start.
if gss_support.available():
    from gssapi.raw.creds import Creds
    from gssapi.raw.misc import GSSError
    from gssapi.raw.names import display_name as _display_name
    from gssapi.raw.sec_contexts import SecurityContext
    from gssapi.raw.sec_contexts import accept_sec_context as _accept_sec_context
    from gssapi.raw.types import RequirementFlag

_METHOD = AuthMethod.GSS


# ---------------------------------------------------------------------------------------------
# pg_GSS_checkauth
# ---------------------------------------------------------------------------------------------


def check_gss_principal(
    principal: str,
    *,
    pg_user: str,
    include_realm: bool,
    krb_realm: str | None,
    usermap: str | None,
    case_insensitive: bool,
    ident: IdentMaps,
    roles: frozenset[str] | None = None,
) -> str | None:
    """None if ``principal`` may log in as ``pg_user``, else the reason for the server log.

    ``case_insensitive`` is ``krb_caseins_users``: it applies to the realm comparison and to
    the user-name map alike. ``roles`` is ``pg_user``'s membership, needed for ``+role``
    entries in the map only.
    """
    name = principal
    # strchr: the first '@' splits, even one the principal's display form escaped.
    at = principal.find("@")
    if at >= 0:
        realm = principal[at + 1 :]
        if not include_realm:
            name = principal[:at]
        if krb_realm:
            same = (
                ascii_lower(krb_realm) == ascii_lower(realm)
                if case_insensitive
                else krb_realm == realm
            )
            if not same:
                # PostgreSQL says this at DEBUG2 only; the client sees the generic failure.
                return f"GSSAPI realm ({realm}) and configured realm ({krb_realm}) don't match"
    elif krb_realm:
        return "GSSAPI did not return realm but realm matching was requested"
    return ident.check_usermap(
        usermap, pg_user, name, case_insensitive=case_insensitive, roles=roles
    )


def authorize_gss_principal(
    principal: str,
    *,
    pg_user: str,
    include_realm: bool,
    krb_realm: str | None,
    usermap: str | None,
    case_insensitive: bool,
    ident: IdentMaps,
    roles: frozenset[str] | None = None,
) -> None:
    """:func:`check_gss_principal`, raising the method's failure (28000, reason in
    ``log_detail``) instead of returning the reason."""
    reason = check_gss_principal(
        principal,
        pg_user=pg_user,
        include_realm=include_realm,
        krb_realm=krb_realm,
        usermap=usermap,
        case_insensitive=case_insensitive,
        ident=ident,
        roles=roles,
    )
    if reason is not None:
        raise method_failure(_METHOD, pg_user, log_detail=reason)


# ---------------------------------------------------------------------------------------------
# pg_GSS_recvauth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` (one AuthenticationGSSContinue) and wait for the next GSSResponse."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """The context is complete. Send ``output`` first (a final AuthenticationGSSContinue, or
    ``b""``), then run :func:`check_gss_principal` on ``principal``."""

    principal: str
    delegated: bool
    output: bytes = b""
    delegated_creds: Creds | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Failure:
    """Send ``output`` (an error token as AuthenticationGSSContinue, or ``b""``), then
    ``error`` as FATAL ErrorResponse."""

    error: ClientError
    output: bytes = b""


Outcome = Send | Success | Failure


class ExchangeState(enum.Enum):
    NEW = "new"
    AWAITING_TOKEN = "awaiting GSSResponse"
    DONE = "done"


# (state, call) → state after it. Absent = illegal.
_TRANSITIONS: dict[tuple[ExchangeState, str], ExchangeState] = {
    (ExchangeState.NEW, "start"): ExchangeState.AWAITING_TOKEN,
    (ExchangeState.AWAITING_TOKEN, "receive"): ExchangeState.AWAITING_TOKEN,
}


def _continue(token: bytes) -> bytes:
    # sendAuthRequest(AUTH_REQ_GSS_CONT): one message per output token.
    return codec.authentication_request(codes.AUTH_GSS_CONTINUE, token) if token else b""


class GssAuthExchange:
    """``gss`` authentication without GSS encryption, one token at a time.

    ``start()`` gives AuthenticationGSS; each GSSResponse goes to ``receive(type, body)``,
    which answers :class:`Send`, :class:`Success` or :class:`Failure`. The session reads
    GSSResponse bodies with ``max_length=MAX_MESSAGE_LENGTH`` (``PG_MAX_AUTH_TOKEN_LENGTH``).
    ``credentials`` as for :class:`~pggate.transport.gss.GssChannel` (None: the default
    acceptor, ``KRB5_KTNAME``). ``user`` is the requested role, for the failure text.
    """

    MAX_MESSAGE_LENGTH = codes.MAX_AUTH_TOKEN_LENGTH

    __slots__ = ("_accept_delegation", "_creds", "_ctx", "_state", "user")

    def __init__(
        self, credentials: Creds | None, *, user: str, accept_delegation: bool = False
    ) -> None:
        gss_support.require()
        self._creds = credentials
        self._accept_delegation = accept_delegation
        self._ctx: SecurityContext | None = None
        self._state = ExchangeState.NEW
        self.user = user

    @property
    def state(self) -> ExchangeState:
        return self._state

    def _move(self, call: str) -> None:
        self._state = look_up(_TRANSITIONS, "GSS exchange", self._state, call)

    def start(self) -> bytes:
        """AuthenticationGSS (``R``, code 7)."""
        self._move("start")
        return codec.authentication_request(codes.AUTH_GSS)

    def receive(self, message_type: bytes, body: bytes | bytearray | memoryview) -> Outcome:
        """One client message while the exchange runs."""
        self._move("receive")
        if message_type != codes.MSG_PASSWORD:
            self._state = ExchangeState.DONE
            # %d of the type byte, as pq_getbyte returns it.
            kind = message_type[0] if message_type else -1
            return Failure(ProtocolViolation(f"expected GSS response, got message type {kind}"))
        if len(body) + codec.LENGTH_WORD_SIZE > self.MAX_MESSAGE_LENGTH:
            # pq_getmessage bounds the length word, which counts itself: a token may have at
            # most 65531 bytes.
            self._state = ExchangeState.DONE
            return Failure(codec.InvalidMessageLength())
        try:
            result = _accept_sec_context(bytes(body), self._creds, self._ctx)
        except GSSError as exc:
            self._state = ExchangeState.DONE
            # pg_GSS_recvauth sends the output token (if any) before checking the status.
            return Failure(
                method_failure(
                    _METHOD,
                    self.user,
                    log_detail=("accepting GSS security context failed: " + gss_status_detail(exc)),
                ),
                _continue(exc.token or b""),
            )
        self._ctx = result.context
        output = _continue(result.token or b"")
        if result.more_steps:
            return Send(output)
        self._state = ExchangeState.DONE
        try:
            name = _display_name(result.initiator_name, name_type=False).name
        except GSSError as exc:
            return Failure(
                method_failure(
                    _METHOD,
                    self.user,
                    log_detail="retrieving GSS user name failed: " + gss_status_detail(exc),
                ),
                output,
            )
        # Here (unlike the encrypted path) delegation also needs the flag in the result.
        delegated = (
            result.delegated_creds
            if self._accept_delegation
            and result.delegated_creds is not None
            and int(result.flags) & RequirementFlag.delegate_to_peer
            else None
        )
        return Success(
            principal=wire_str(name),
            delegated=delegated is not None,
            output=output,
            delegated_creds=delegated,
        )


__all__ = [
    "ExchangeState",
    "Failure",
    "GssAuthExchange",
    "Outcome",
    "Send",
    "Success",
    "authorize_gss_principal",
    "check_gss_principal",
]
