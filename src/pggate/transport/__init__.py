"""The encryption layers behind one byte-stream interface (:class:`Channel`): plain
(:data:`PLAIN`), TLS (:mod:`pggate.transport.tls`) and GSSAPI (:mod:`pggate.transport.gss`).
Every failure is a :class:`ChannelError`; what a handshake established is a
:class:`ChannelInfo`. Nothing above this package asks which channel it holds.

Nothing here imports python-gssapi (the optional extra pggate[gss]): :mod:`pggate.transport.gss`
is imported where a GSS channel is made, only when GSSAPI is configured.
"""

from __future__ import annotations

from pggate.transport.channel import (
    PLAIN,
    Channel,
    ChannelError,
    ChannelInfo,
    ChannelKind,
    PlainChannel,
)
from pggate.transport.gss_error import GssError
from pggate.transport.tls import TlsChannel, TlsError, TlsHandshakeError

__all__ = [
    "PLAIN",
    "Channel",
    "ChannelError",
    "ChannelInfo",
    "ChannelKind",
    "GssError",
    "PlainChannel",
    "TlsChannel",
    "TlsError",
    "TlsHandshakeError",
]
