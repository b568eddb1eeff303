"""What a connection's channel tells the login, derived in one place.

The channel reports its handshake as a :class:`~pggate.transport.ChannelInfo`. From it, and
nothing else about the channel, come pg_hba.conf's ``hostssl``/``hostgssenc`` facts, the client
certificate that ``clientcert`` and method ``cert`` check, the SCRAM-SHA-256-PLUS binding, the
identity a GSS-encrypted connection already established for method ``gss``, and the
encryption part of the ``connection authorized`` line.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TYPE_CHECKING

from pggate.auth import cert
from pggate.hba import ConnectionFacts
from pggate.proto.messages import StartupMessage
from pggate.transport import ChannelInfo

if TYPE_CHECKING:
    from pggate.login.machine import AuthResult


def connection_facts(
    info: ChannelInfo,
    startup: StartupMessage,
    *,
    address: IPv4Address | IPv6Address,
    hostname: str | None,
    roles: frozenset[str] | None,
    local_interfaces: tuple[IPv4Interface | IPv6Interface, ...],
) -> ConnectionFacts:
    """What pg_hba.conf matches a TCP connection by (hba.c check_hba)."""
    return ConnectionFacts(
        is_local=False,
        ssl=info.ssl,
        gss=info.gss,
        address=address,
        hostname=hostname,
        database=startup.database,
        user=startup.user,
        replication=startup.replication,
        roles=roles,
        local_interfaces=local_interfaces,
    )


def peer_certificate(info: ChannelInfo) -> cert.PeerCertificate | None:
    """The client certificate facts of a TLS connection (verified or not); None without TLS."""
    if not info.ssl:
        return None
    return cert.PeerCertificate(
        verified=info.peer_cert_verified,
        common_name=info.peer_common_name,
        distinguished_name=info.peer_subject_dn,
    )


def scram_binding(info: ChannelInfo) -> bytes | None:
    """SCRAM's ``tls-server-end-point`` data: our certificate's hash on a TLS connection whose
    certificate has one; None offers no SCRAM-SHA-256-PLUS."""
    return info.end_point_hash if info.ssl else None


def gss_identity(info: ChannelInfo) -> tuple[str, bool] | None:
    """(principal, delegated) that GSS encryption established, so method ``gss`` runs no
    exchange (auth.c pg_GSS_recvauth is skipped when ``gss->enc``); None otherwise."""
    if not info.gss:
        return None
    return info.gss_principal or "", info.gss_delegated


def authorized_suffix(info: ChannelInfo, auth: AuthResult) -> str:
    """The tail of PostgreSQL's ``connection authorized`` line (postinit.c PerformAuthentication):
    the TLS parameters, or the GSS facts when GSS encrypted or authenticated the connection."""
    if info.ssl and info.cipher is not None:
        return f" SSL enabled (protocol={info.tls_version}, cipher={info.cipher}, bits={info.bits})"
    if not (info.gss or auth.gss_authenticated):
        return ""
    delegated = auth.gss_delegated or info.gss_delegated
    text = (
        f" GSS (authenticated={'yes' if auth.gss_authenticated else 'no'}, "
        f"encrypted={'yes' if info.gss else 'no'}, "
        f"delegated_credentials={'yes' if delegated else 'no'}"
    )
    if auth.gss_principal:
        text += f", principal={auth.gss_principal}"
    return text + ")"


__all__ = [
    "authorized_suffix",
    "connection_facts",
    "gss_identity",
    "peer_certificate",
    "scram_binding",
]
