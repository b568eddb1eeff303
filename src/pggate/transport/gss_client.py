"""pggate as a GSSAPI client toward its backend (sans-IO): libpq's side of ``gssencmode`` and
of AuthenticationGSS.

Three pieces of libpq, with its texts (fe-gssapi-common.c, fe-secure-gssapi.c, fe-auth.c):

* :class:`ClientCredentials` is ``pg_GSS_have_cred_cache``: whether GSSAPI initiator
  credentials can be acquired. libpq asks for the process's default ones (``KRB5CCNAME``,
  or MIT's default client keytab); pggate does the same unless ``backend_krb_client_keyfile``
  names a client keytab, from which GSSAPI gets a ticket-granting ticket when it needs one,
  kept in a private ``MEMORY:`` credential cache (MIT's credential-store extension:
  ``client_keytab`` and ``ccache``), so the process environment stays untouched.
* :class:`GssClientHandshake` is ``pqsecure_open_gss``: after the server's ``G``, the client
  sends first; every packet is a ``uint32`` length and one ``gss_init_sec_context`` token of at
  most 65532 bytes (``PQ_GSS_AUTH_BUFFER_SIZE``); a packet whose first byte is ``E`` is the
  server's error; the context is established when ``gss_init_sec_context`` has nothing more
  to send. Then :class:`GssClientCodec` is ``pg_GSS_write``/``pg_GSS_read``: packets of a
  ``uint32`` length and a ``gss_wrap`` (confidentiality required) of at most 16380 bytes
  (``PQ_GSS_MAX_PACKET_SIZE``).
* :class:`GssAuthInitiator` is ``pg_GSS_startup``/``pg_GSS_continue``: the tokens of
  AuthenticationGSS over an unencrypted or TLS link (mutual authentication only).

The service principal is ``krbsrvname@host``, a host-based service name, as libpq imports it
(``pg_GSS_load_servicename``). Credential delegation (``gssdelegation``) is never requested.

python-gssapi is the optional extra ``pggate[gss]``: nothing here imports it until a
credential is acquired or a context is made (every pggate module imports without it).
Every failure is a :class:`GssClientError` carrying libpq's text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pggate import gss_support
from pggate.proto import codes
from pggate.proto.backend import GssAuthFailure
from pggate.transport.gss_frames import (
    LENGTH as _LENGTH,
)
from pggate.transport.gss_frames import (
    LENGTH_SIZE as _LENGTH_SIZE,
)
from pggate.transport.gss_frames import (
    MAX_DATA_PAYLOAD,
    MAX_HANDSHAKE_TOKEN,
    Buffer,
    unwrap_packets,
)

if TYPE_CHECKING:
    from gssapi.raw.creds import Creds
    from gssapi.raw.misc import GSSError
    from gssapi.raw.names import Name
    from gssapi.raw.sec_contexts import SecurityContext


# The largest token / wrapped payload after the length word, per phase (fe-secure-gssapi.c).
_ERROR_PACKET: Final = codes.MSG_ERROR_RESPONSE[0]

# libpq's texts.
INITIATE_FAILED: Final = "could not initiate GSSAPI security context"
CONTINUATION_FAILED: Final = "GSSAPI continuation error"
AUTH_NOT_SUPPORTED: Final = "GSSAPI authentication not supported"
NO_HOST_NAME: Final = "host name must be specified"


class GssClientError(GssAuthFailure):
    """A GSSAPI failure on pggate's client side, in libpq's words (``message``)."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


def gss_error_text(prefix: str, exc: GSSError) -> str:
    """``pg_GSS_error``: the prefix, then every major status message, then every minor one
    (``prefix: major ...: minor ...``)."""
    major = " ".join(exc.get_all_statuses(exc.maj_code, True))
    minor = " ".join(exc.get_all_statuses(exc.min_code, False))
    return f"{prefix}: {major}: {minor}"


def _gssapi_error() -> type[GSSError]:
    from gssapi.raw.misc import GSSError

    return GSSError


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """Where pggate's initiator credentials come from: ``keytab`` (``FILE:/path``) is a client
    keytab whose tickets go to a private in-memory cache (:attr:`ccache`); None means GSSAPI's
    default initiator credentials, as libpq uses them."""

    keytab: str | None = None

    @property
    def ccache(self) -> str | None:
        """The private credential cache of :attr:`keytab`: one per keytab and process, so a
        reload that keeps the keytab keeps its tickets."""
        if self.keytab is None:
            return None
        digest = hashlib.sha256(self.keytab.encode()).hexdigest()[:16]
        return f"MEMORY:pggate-backend-{digest}"

    def _acquire(self) -> Creds:
        gss_support.require()
        if self.keytab is None:
            from gssapi.raw.creds import acquire_cred

            return acquire_cred(None, usage="initiate").creds
        from gssapi.raw.ext_cred_store import acquire_cred_from

        ccache = self.ccache
        assert ccache is not None
        store: dict[bytes | str, bytes | str] = {
            b"client_keytab": self.keytab.encode(),
            b"ccache": ccache.encode(),
        }
        return acquire_cred_from(store, usage="initiate").creds

    def acquire(self) -> Creds | None:
        """``pg_GSS_have_cred_cache``: the credentials, or None when there are none (or
        python-gssapi is not installed: a libpq built without GSSAPI never tries either)."""
        if not gss_support.available():
            return None
        try:
            return self._acquire()
        except _gssapi_error():
            return None

    def for_context(self, prefix: str) -> Creds | None:
        """The credentials to initiate a context with. Without a keytab: the default ones,
        or None (GSSAPI then looks for them itself and fails with its own status, as libpq's
        ``GSS_C_NO_CREDENTIAL`` does). With one, its failure is ``prefix: status``."""
        if not gss_support.available():
            raise GssClientError(AUTH_NOT_SUPPORTED)
        try:
            return self._acquire()
        except _gssapi_error() as exc:
            if self.keytab is None:
                return None
            raise GssClientError(gss_error_text(prefix, exc)) from None


def service_name(krbsrvname: str, host: str) -> str:
    """The target libpq asks a ticket for: ``krbsrvname@host`` (a host-based service)."""
    return f"{krbsrvname}@{host}"


class _Initiator:
    """One ``gss_init_sec_context`` loop toward a host-based service name."""

    __slots__ = ("_context", "_creds", "_flags", "_init", "_target")

    def __init__(self, credentials: Creds | None, service: str, flags: int) -> None:
        from gssapi.raw.names import import_name
        from gssapi.raw.sec_contexts import init_sec_context
        from gssapi.raw.types import NameType

        try:
            self._target: Name = import_name(service.encode(), NameType.hostbased_service)
        except _gssapi_error() as exc:
            raise GssClientError(gss_error_text("GSSAPI name import error", exc)) from None
        self._creds = credentials
        self._flags = flags
        self._context: SecurityContext | None = None
        self._init: Callable[..., Any] = init_sec_context

    @property
    def context(self) -> SecurityContext | None:
        return self._context

    def step(self, token: bytes | None, prefix: str) -> tuple[bytes, bool]:
        """One call: (output token, complete); a failure is ``prefix: status``."""
        try:
            result = self._init(
                self._target,
                creds=self._creds,
                context=self._context,
                flags=self._flags,
                input_token=token,
            )
        except _gssapi_error() as exc:
            raise GssClientError(gss_error_text(prefix, exc)) from None
        self._context = result.context
        return result.token or b"", not result.more_steps


def _flags(*names: str) -> int:
    from gssapi.raw.types import RequirementFlag

    value = 0
    for name in names:
        value |= int(RequirementFlag[name])
    return value


# fe-secure-gssapi.c GSS_REQUIRED_FLAGS: encryption, mutual authentication, tamperproofing.
_ENCRYPTION_FLAGS: Final = (
    "mutual_authentication",
    "replay_detection",
    "out_of_sequence_detection",
    "confidentiality",
    "integrity",
)


class GssClientHandshake:
    """``pqsecure_open_gss``, sans-IO: call :meth:`start` (blocking: GSSAPI may ask the KDC
    for a ticket), send its bytes, then :meth:`feed` every received chunk and send what it
    returns until :attr:`done`; then :meth:`codec` is the data phase, holding any bytes that
    came in behind the last handshake token.

    ``credentials`` as :meth:`ClientCredentials.for_context` gives them; ``service`` is
    :func:`service_name`'s.
    """

    __slots__ = ("_buf", "_done", "_initiator", "_max_chunk")

    def __init__(self, credentials: Creds | None, service: str) -> None:
        gss_support.require()
        self._initiator = _Initiator(credentials, service, _flags(*_ENCRYPTION_FLAGS))
        self._buf = bytearray()
        self._done = False
        self._max_chunk = 0

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> bytes:
        """The first packet (the client sends first)."""
        return self._step(None)

    def feed(self, data: Buffer) -> bytes:
        """The server's bytes in; the packets to send out (empty once done)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while not self._done and len(buf) >= _LENGTH_SIZE:
            if buf[0] == _ERROR_PACKET:
                # An error packet has no length word: libpq reports what follows the 'E', as
                # a C string (an ErrorResponse's own length word usually ends it at once).
                text = bytes(buf[1:]).split(b"\0", 1)[0].decode("utf-8", "replace")
                raise GssClientError(
                    text or "server sent an error response during GSSAPI context establishment"
                )
            (length,) = _LENGTH.unpack_from(buf)
            if length > MAX_HANDSHAKE_TOKEN:
                raise GssClientError(
                    f"oversize GSSAPI packet sent by the server ({length} > {MAX_HANDSHAKE_TOKEN})"
                )
            end = _LENGTH_SIZE + length
            if len(buf) < end:
                break
            token = bytes(buf[_LENGTH_SIZE:end])
            del buf[:end]
            out.append(self._step(token))
        return b"".join(out)

    def _step(self, token: bytes | None) -> bytes:
        output, _ = self._initiator.step(token, INITIATE_FAILED)
        if not output:
            # libpq's test of completion: gss_init_sec_context has nothing more to send.
            self._open()
            return b""
        if len(output) > MAX_HANDSHAKE_TOKEN:
            raise GssClientError(
                f"client tried to send oversize GSSAPI packet ({len(output)} > "
                f"{MAX_HANDSHAKE_TOKEN})"
            )
        return _LENGTH.pack(len(output)) + output

    def _open(self) -> None:
        from gssapi.raw.message import wrap_size_limit

        context = self._initiator.context
        assert context is not None
        try:
            self._max_chunk = wrap_size_limit(context, MAX_DATA_PAYLOAD, True)  # type: ignore[arg-type]
        except _gssapi_error() as exc:
            raise GssClientError(gss_error_text("GSSAPI size check error", exc)) from None
        if self._max_chunk <= 0:
            raise GssClientError("GSSAPI size check error")
        self._done = True

    @property
    def principal(self) -> str | None:
        """pggate's own principal in the established context (``pggate@EXAMPLE.COM``)."""
        context = self._initiator.context
        if context is None or not self._done:
            return None
        from gssapi.raw.names import display_name
        from gssapi.raw.sec_contexts import inquire_context

        try:
            name = inquire_context(context, initiator_name=True).initiator_name
            return None if name is None else display_name(name, name_type=False).name.decode()
        except (_gssapi_error(), UnicodeDecodeError):
            return None

    def codec(self) -> GssClientCodec:
        """The data phase; bytes received behind the last handshake token are in it (read
        them with ``feed(b"")``)."""
        if not self._done:
            raise RuntimeError("the GSSAPI handshake is not done")
        context = self._initiator.context
        assert context is not None
        return GssClientCodec(context, self._max_chunk, bytes(self._buf))


class GssClientCodec:
    """``pg_GSS_write`` / ``pg_GSS_read`` on an established context: plaintext in and out.

    :meth:`encrypt` cuts the plaintext into chunks of at most the wrap size limit and wraps
    each with confidentiality into one packet; :meth:`feed` unwraps every complete packet
    (a partial one waits). Any :class:`GssClientError` is final: the connection is unusable.
    """

    __slots__ = ("_buf", "_context", "_max_chunk", "_unwrap", "_wrap")

    def __init__(self, context: SecurityContext, max_chunk: int, pending: bytes = b"") -> None:
        from gssapi.raw.message import unwrap, wrap

        self._context = context
        self._max_chunk = max_chunk
        self._buf = bytearray(pending)
        self._wrap: Callable[..., Any] = wrap
        self._unwrap: Callable[..., Any] = unwrap

    @property
    def max_plaintext_chunk(self) -> int:
        return self._max_chunk

    def encrypt(self, data: Buffer) -> bytes:
        size = len(data)
        if not size:
            return b""
        limit = self._max_chunk
        if size <= limit:
            return self._wrap_one(data if type(data) is bytes else bytes(data))
        view = memoryview(data)
        return b"".join([self._wrap_one(bytes(view[i : i + limit])) for i in range(0, size, limit)])

    def _wrap_one(self, chunk: bytes) -> bytes:
        try:
            result = self._wrap(self._context, chunk, True)
        except _gssapi_error() as exc:
            raise GssClientError(gss_error_text("GSSAPI wrap error", exc)) from None
        if not result.encrypted:
            raise GssClientError("outgoing GSSAPI message would not use confidentiality")
        payload: bytes = result.message
        if len(payload) > MAX_DATA_PAYLOAD:
            raise GssClientError(
                f"client tried to send oversize GSSAPI packet ({len(payload)} > {MAX_DATA_PAYLOAD})"
            )
        return _LENGTH.pack(len(payload)) + payload

    def feed(self, data: Buffer) -> bytes:
        return unwrap_packets(self._buf, data, self._unwrap_packet, _oversize_from_server)

    def _unwrap_packet(self, token: bytes) -> bytes:
        """One packet's plaintext (fe-secure-gssapi.c pg_GSS_read)."""
        try:
            result = self._unwrap(self._context, token)
        except _gssapi_error() as exc:
            raise GssClientError(gss_error_text("GSSAPI unwrap error", exc)) from None
        if not result.encrypted:
            raise GssClientError("incoming GSSAPI message did not use confidentiality")
        message: bytes = result.message
        return message


def _oversize_from_server(length: int) -> GssClientError:
    return GssClientError(
        f"oversize GSSAPI packet sent by the server ({length} > {MAX_DATA_PAYLOAD})"
    )


class GssAuthInitiator:
    """AuthenticationGSS answered (fe-auth.c pg_GSS_startup, pg_GSS_continue), as the
    :class:`~pggate.proto.backend.GssAuthClient` a backend login takes.

    ``host`` is the conninfo's ``host`` entry for this server (None for a ``hostaddr``-only
    entry, which libpq refuses: ``host name must be specified``). Nothing is imported or
    acquired before the server asks.
    """

    __slots__ = ("_complete", "_credentials", "_host", "_initiator", "_krbsrvname")

    def __init__(self, credentials: ClientCredentials, krbsrvname: str, host: str | None) -> None:
        self._credentials = credentials
        self._krbsrvname = krbsrvname
        self._host = host
        self._initiator: _Initiator | None = None
        self._complete = False

    @property
    def started(self) -> bool:
        return self._initiator is not None

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        initiator = self._initiator
        if initiator is None:
            if not self._host:
                raise GssClientError(NO_HOST_NAME)
            creds = self._credentials.for_context(CONTINUATION_FAILED)
            initiator = _Initiator(
                creds,
                service_name(self._krbsrvname, self._host),
                _flags("mutual_authentication"),
            )
            self._initiator = initiator
            token = None
        output, complete = initiator.step(token, CONTINUATION_FAILED)
        self._complete = complete
        return output, complete


__all__ = [
    "AUTH_NOT_SUPPORTED",
    "CONTINUATION_FAILED",
    "INITIATE_FAILED",
    "MAX_DATA_PAYLOAD",
    "MAX_HANDSHAKE_TOKEN",
    "NO_HOST_NAME",
    "ClientCredentials",
    "GssAuthInitiator",
    "GssClientCodec",
    "GssClientError",
    "GssClientHandshake",
    "gss_error_text",
    "service_name",
]
