"""The encryption layers behind one byte-stream shape: feed (raw in, plaintext out),
encrypt (plaintext in, raw out), pending_output, peer_closed, close (the goodbye to send).

Nothing here imports python-gssapi (the optional extra pggate[gss]): :mod:`pggate.transport.gss`
is imported where a GSS channel is made, only when GSSAPI is configured.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeGuard

from pggate.transport.gss_error import GssError
from pggate.transport.tls import TlsError

if TYPE_CHECKING:
    from pggate.transport.gss import GssChannel

# What a channel's feed/encrypt may raise; the session and relay log it and close.
CHANNEL_ERRORS = (TlsError, GssError)


def is_gss(channel: object) -> TypeGuard[GssChannel]:
    """Whether ``channel`` is a GSS channel, without importing the GSS module: if that module
    was never loaded, no GSS channel exists."""
    module = sys.modules.get("pggate.transport.gss")
    return module is not None and isinstance(channel, module.GssChannel)


__all__ = ["CHANNEL_ERRORS", "GssError", "TlsError", "is_gss"]
