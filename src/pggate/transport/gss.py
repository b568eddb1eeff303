"""Sans-IO GSSAPI encryption channel: the server side of ``gssencmode``.

Owns one connection's GSSAPI state after the ``G`` answer to GSSENCRequest, as PostgreSQL's
``be-secure-gssapi.c`` defines it (shared/protocol.md §3.1–§3.3):

* **context establishment** (``secure_open_gssapi``): the client sends first; every packet is a
  ``uint32`` big-endian length and one ``gss_accept_sec_context`` input token of at most
  65532 bytes; every non-empty output token goes back with the same framing; the loop ends
  when the accept call reports completion (with or without a last token to send);
* **data phase** (``be_gssapi_read`` / ``be_gssapi_write``): the stream is cut into packets of
  ``uint32`` length + ``gss_wrap(conf_req=1)`` output, each at most 16380 bytes; a packet that
  was not encrypted, or whose length word says more than 16380, ends the connection.

PostgreSQL never answers a failure here with an ErrorResponse: it logs (COMMERROR) and drops
the connection. :class:`GssError` carries that log text; the server logs it and closes.

Credentials: the caller passes acceptor credentials or None for the process's default
acceptor. The server passes :func:`acceptor_credentials` of ``krb_server_keyfile``: the keytab
named to GSSAPI through its credential store, with no principal name, so that any principal in
the keytab is accepted, as PostgreSQL's ``GSS_C_NO_CREDENTIAL`` does after it sets
``KRB5_KTNAME`` to that file before each accept. Naming the keytab per connection keeps the
process environment untouched and lets a reload change the file. This module reads no
environment and no files itself (GSSAPI reads the keytab).

Hot path: one ``gss_unwrap`` per received packet and one ``gss_wrap`` per sent chunk through
python-gssapi's low-level bindings (the high-level ``SecurityContext`` wraps every method in a
deferred-error check that costs a Python call per packet).
"""

from __future__ import annotations

import enum
from typing import Final

from pggate import gss_support
from pggate.proto.messages import wire_str
from pggate.transport.channel import ChannelInfo, ChannelKind
from pggate.transport.gss_error import GssError
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

# python-gssapi is the optional extra pggate[gss]. Without it this module still imports (the
# server names its classes), and GssChannel() refuses to start (gss_support.require).
if gss_support.available():
    from gssapi.raw.creds import Creds
    from gssapi.raw.ext_cred_store import acquire_cred_from as _acquire_cred_from
    from gssapi.raw.message import unwrap as _unwrap
    from gssapi.raw.message import wrap as _wrap
    from gssapi.raw.message import wrap_size_limit as _wrap_size_limit
    from gssapi.raw.misc import GSSError
    from gssapi.raw.names import display_name as _display_name
    from gssapi.raw.sec_contexts import SecurityContext
    from gssapi.raw.sec_contexts import accept_sec_context as _accept_sec_context

# The stubs of gssapi.raw.message name the high-level context class where the functions take
# the low-level one (which the high-level class subclasses): hence the arg-type ignores below.


def gss_status_detail(exc: GSSError) -> str:
    """``pg_GSS_error``'s DETAIL: all major status messages, ``": "``, all minor ones, each
    list joined by spaces (be-gssapi-common.c pg_GSS_error_int)."""
    major = " ".join(exc.get_all_statuses(exc.maj_code, True))
    minor = " ".join(exc.get_all_statuses(exc.min_code, False))
    return f"{major}: {minor}"


def gss_failure(message: str, exc: GSSError) -> GssError:
    """:class:`GssError` for a failed GSSAPI call, worded as ``pg_GSS_error`` logs it."""
    return GssError(message, detail=gss_status_detail(exc))


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    FAILED = "failed"


class IllegalChannelUse(RuntimeError):
    """The server layer called the channel in a state where that call makes no sense."""

    def __init__(self, state: State, call: str) -> None:
        super().__init__(f"GSS channel: {call}() is not allowed in state {state.value!r}")
        self.state = state
        self.call = call


def acceptor_credentials(keytab: str) -> Creds:
    """Acceptor credentials for every principal in ``keytab`` (``FILE:/path``): what
    ``GSS_C_NO_CREDENTIAL`` means with ``KRB5_KTNAME`` set to it. A keytab GSSAPI cannot use
    fails here as the accept would: :class:`GssError` ``could not accept GSSAPI security
    context`` with the GSSAPI status as detail."""
    gss_support.require()
    try:
        return _acquire_cred_from({b"keytab": keytab.encode()}, usage="accept").creds
    except GSSError as exc:
        raise gss_failure("could not accept GSSAPI security context", exc) from exc


_HANDSHAKING: Final = ChannelInfo(kind=ChannelKind.GSS)


def _oversize_payload(length: int) -> GssError:
    return _oversize(length, MAX_DATA_PAYLOAD)


def _oversize(length: int, limit: int) -> GssError:
    return GssError(f"oversize GSSAPI packet sent by the client ({length} > {limit})")


class GssChannel:
    """One GSSAPI-encrypted connection, server side, sans-IO.

    Server use, as every :class:`~pggate.transport.channel.Channel`:
    ``GssChannel(credentials, initial)`` with any bytes that arrived behind GSSENCRequest;
    then ``handshake()`` → ``(bytes to send, done)``, writing its output each time and
    ``feed``-ing received bytes in between (or ``receive_handshake(data)`` for both at once);
    once done, ``feed(b"")`` collects plaintext from packets that came in behind the last
    handshake token; then ``feed(raw) -> plaintext`` per read and ``encrypt(plain) -> raw``
    per write. Any :class:`GssError` is final: log it and close, send nothing.

    ``accept_delegation`` is ``gss_accept_delegation``: only then are credentials the client
    delegated kept (``delegated_creds``) and reported (``delegated_credentials``).
    """

    __slots__ = (
        "_accept_delegation",
        "_buf",
        "_creds",
        "_ctx",
        "_delegated",
        "_info",
        "_max_chunk",
        "_principal",
        "_state",
    )

    transparent: Final = False

    def __init__(
        self,
        credentials: Creds | None,
        initial: bytes = b"",
        *,
        accept_delegation: bool = False,
    ) -> None:
        gss_support.require()
        self._creds = credentials
        self._accept_delegation = accept_delegation
        self._ctx: SecurityContext | None = None
        self._state = State.HANDSHAKE
        self._buf = bytearray(initial)
        self._delegated: Creds | None = None
        self._principal: str | None = None
        self._max_chunk = 0
        self._info = _HANDSHAKING

    # -- handshake ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshake_done(self) -> bool:
        return self._state is State.OPEN

    def receive_handshake(self, data: Buffer) -> tuple[bytes, bool]:
        """Buffer ``data`` and advance the handshake: (bytes to send, done)."""
        if self._state is not State.HANDSHAKE:
            raise IllegalChannelUse(self._state, "receive_handshake")
        self._buf += data
        return self.handshake()

    def handshake(self) -> tuple[bytes, bool]:
        """Advance the handshake with every complete token fed so far: (bytes to send, done).

        Bytes behind the token that completes the context stay buffered for :meth:`feed`
        (PostgreSQL reads exactly one packet at a time, so they reach ``be_gssapi_read``).
        """
        if self._state is State.OPEN:
            return b"", True
        if self._state is not State.HANDSHAKE:
            raise IllegalChannelUse(self._state, "handshake")
        buf = self._buf
        out: list[bytes] = []
        pos = 0
        try:
            while len(buf) - pos >= _LENGTH_SIZE:
                (length,) = _LENGTH.unpack_from(buf, pos)
                # Checked on the length word alone, before waiting for the body.
                if length > MAX_HANDSHAKE_TOKEN:
                    raise _oversize(length, MAX_HANDSHAKE_TOKEN)
                end = pos + _LENGTH_SIZE + length
                if end > len(buf):
                    break
                token = bytes(buf[pos + _LENGTH_SIZE : end])
                pos = end
                output, complete = self._accept(token)
                if output:
                    if len(output) > MAX_HANDSHAKE_TOKEN:
                        raise GssError(
                            "server tried to send oversize GSSAPI packet "
                            f"({len(output)} > {MAX_HANDSHAKE_TOKEN})"
                        )
                    out.append(_LENGTH.pack(len(output)) + output)
                if complete:
                    self._open()
                    break
        except GssError:
            self._state = State.FAILED
            raise
        del buf[:pos]
        return b"".join(out), self.handshake_done

    def _accept(self, token: bytes) -> tuple[bytes, bool]:
        try:
            result = _accept_sec_context(token, self._creds, self._ctx)
        except GSSError as exc:
            # secure_open_gssapi sends nothing on failure, not even an error token.
            raise gss_failure("could not accept GSSAPI security context", exc) from exc
        self._ctx = result.context
        if result.delegated_creds is not None and self._accept_delegation:
            self._delegated = result.delegated_creds
        if result.more_steps:
            return result.token or b"", False
        try:
            name = _display_name(result.initiator_name, name_type=False).name
        except GSSError as exc:
            raise gss_failure("retrieving GSS user name failed", exc) from exc
        self._principal = wire_str(name)
        return result.token or b"", True

    def _open(self) -> None:
        assert self._ctx is not None
        # be_gssapi_write's chunk size: the largest plaintext whose encrypted form (with
        # confidentiality) fits one 16380-byte packet payload.
        try:
            self._max_chunk = _wrap_size_limit(self._ctx, MAX_DATA_PAYLOAD, True)  # type: ignore[arg-type]
        except GSSError as exc:
            raise gss_failure("GSSAPI size check error", exc) from exc
        if self._max_chunk <= 0:
            raise GssError("GSSAPI size check error")
        self._info = ChannelInfo(
            kind=ChannelKind.GSS,
            gss_principal=self._principal,
            gss_delegated=self._delegated is not None,
        )
        self._state = State.OPEN

    # -- data --------------------------------------------------------------------------------

    def feed(self, data: Buffer) -> bytes:
        """Raw bytes in, plaintext out.  Before the handshake is done: buffered, ``b""``.

        Every complete packet is unwrapped; a partial one waits for the next call.
        """
        if self._state is not State.OPEN:
            if self._state is State.HANDSHAKE:
                self._buf += data
                return b""
            raise IllegalChannelUse(self._state, "feed")
        try:
            return unwrap_packets(self._buf, data, self._unwrap_packet, _oversize_payload)
        except GssError:
            self._state = State.FAILED
            raise

    def _unwrap_packet(self, token: bytes) -> bytes:
        """One packet's plaintext (be_gssapi_read: gss_unwrap, confidentiality required)."""
        try:
            result = _unwrap(self._ctx, token)  # type: ignore[arg-type]
        except GSSError as exc:
            raise gss_failure("GSSAPI unwrap error", exc) from exc
        if not result.encrypted:
            raise GssError("incoming GSSAPI message did not use confidentiality")
        message: bytes = result.message
        return message

    #: GSS has no close message of its own: the peer ends the stream by closing TCP.
    peer_closed = False

    def pending_output(self) -> bytes:
        """Nothing is ever queued: GSS sends only what encrypt() returns (TLS-shaped API)."""
        return b""

    def close(self) -> bytes:
        """Nothing to say before the socket closes: GSS has no close message (TLS-shaped API;
        be-secure-gssapi.c has no counterpart of be_tls_close)."""
        return b""

    def encrypt(self, data: Buffer) -> bytes:
        """Plaintext in, packets out: chunks of at most the wrap size limit, each wrapped with
        confidentiality into one packet of at most 16380 bytes after its length word."""
        if self._state is not State.OPEN:
            raise IllegalChannelUse(self._state, "encrypt")
        limit = self._max_chunk
        size = len(data)
        try:
            if size <= limit:
                return self._wrap_one(data if type(data) is bytes else bytes(data)) if size else b""
            view = memoryview(data)
            return b"".join(
                [self._wrap_one(bytes(view[i : i + limit])) for i in range(0, size, limit)]
            )
        except GssError:
            self._state = State.FAILED
            raise

    def _wrap_one(self, chunk: bytes) -> bytes:
        try:
            result = _wrap(self._ctx, chunk, True)  # type: ignore[arg-type]
        except GSSError as exc:
            raise gss_failure("GSSAPI wrap error", exc) from exc
        if not result.encrypted:
            raise GssError("outgoing GSSAPI message would not use confidentiality")
        payload = result.message
        if len(payload) > MAX_DATA_PAYLOAD:
            raise GssError(
                f"server tried to send oversize GSSAPI packet ({len(payload)} > {MAX_DATA_PAYLOAD})"
            )
        return _LENGTH.pack(len(payload)) + payload

    # -- facts after the handshake -----------------------------------------------------------

    @property
    def info(self) -> ChannelInfo:
        """The handshake's facts (kind only, until the context is established)."""
        return self._info

    @property
    def principal(self) -> str | None:
        """The initiator's name as ``gss_display_name`` shows it (``test1@EXAMPLE.COM``)."""
        return self._principal

    @property
    def delegated_credentials(self) -> bool:
        """The client delegated credentials and ``accept_delegation`` was on."""
        return self._delegated is not None

    @property
    def delegated_creds(self) -> Creds | None:
        """The delegated credentials themselves (for a server that stores them)."""
        return self._delegated

    @property
    def max_plaintext_chunk(self) -> int:
        """Plaintext bytes per packet (``gss_wrap_size_limit`` for 16380); 0 before open."""
        return self._max_chunk

    @property
    def context(self) -> SecurityContext | None:
        """The established GSSAPI context (tests and diagnostics)."""
        return self._ctx


__all__ = [
    "MAX_DATA_PAYLOAD",
    "MAX_HANDSHAKE_TOKEN",
    "GssChannel",
    "GssError",
    "IllegalChannelUse",
    "State",
    "acceptor_credentials",
    "gss_failure",
    "gss_status_detail",
]
