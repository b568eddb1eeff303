"""Connection types and authentication method names of pg_hba.conf (PostgreSQL 18)."""

from __future__ import annotations

from enum import StrEnum


class ConnType(StrEnum):
    LOCAL = "local"
    HOST = "host"
    HOSTSSL = "hostssl"
    HOSTNOSSL = "hostnossl"
    HOSTGSSENC = "hostgssenc"
    HOSTNOGSSENC = "hostnogssenc"


class AuthMethod(StrEnum):
    """Methods a Linux build of PostgreSQL 18 accepts (``hba.c:UserAuthName``)."""

    TRUST = "trust"
    REJECT = "reject"
    MD5 = "md5"
    PASSWORD = "password"
    SCRAM_SHA_256 = "scram-sha-256"
    GSS = "gss"
    IDENT = "ident"
    PEER = "peer"
    PAM = "pam"
    LDAP = "ldap"
    RADIUS = "radius"
    CERT = "cert"
    OAUTH = "oauth"


# Methods whose secret is a password: their failures are 28P01 (auth.c auth_failed).
PASSWORD_METHODS = frozenset({AuthMethod.PASSWORD, AuthMethod.MD5, AuthMethod.SCRAM_SHA_256})

# Names PostgreSQL knows but a Linux build rejects with "not supported by this build"
# (SSPI is Windows-only, BSD auth is OpenBSD-only).
UNSUPPORTED_METHODS = frozenset({"sspi", "bsd"})
