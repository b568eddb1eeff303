"""OpenSSL failure reasons PostgreSQL treats specially, for both of pggate's TLS ends."""

from __future__ import annotations

# OpenSSL reasons after which PostgreSQL adds the protocol-range HINT (be_tls_open_server), and
# libpq the same words to its error (open_client_SSL).
PROTOCOL_REASONS = frozenset(
    {
        "NO_PROTOCOLS_AVAILABLE",
        "UNSUPPORTED_PROTOCOL",
        "BAD_PROTOCOL_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "UNKNOWN_SSL_VERSION",
        "UNSUPPORTED_SSL_VERSION",
        "WRONG_SSL_VERSION",
        "WRONG_VERSION_NUMBER",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "VERSION_TOO_HIGH",
        "VERSION_TOO_LOW",
    }
)
