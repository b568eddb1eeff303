"""The encryption layers behind one byte-stream shape: feed (raw in, plaintext out),
encrypt (plaintext in, raw out), pending_output, peer_closed."""

from __future__ import annotations

from pggate.transport.gss import GssError
from pggate.transport.tls import TlsError

# What a channel's feed/encrypt may raise; the session and relay log it and close.
CHANNEL_ERRORS = (TlsError, GssError)
