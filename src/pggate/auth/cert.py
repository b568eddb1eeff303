"""Client certificates in pg_hba.conf: ``clientcert=verify-ca|verify-full`` and method ``cert``.

PostgreSQL checks certificates in two places (auth.c ClientAuthentication and CheckCertAuth):
before the method runs, any ``clientcert`` (or method ``cert``) needs a CA store and a verified
peer certificate; after the method succeeds, ``verify-full`` (implied by ``cert``) needs the
certificate's CN, or RFC 2253 DN with ``clientname=DN``, to map to the requested role. For a
method other than ``cert``, a name mismatch is reported with *that method's* failure text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pggate.hba import HbaRule, IdentMaps
from pggate.hba.methods import PASSWORD_METHODS, AuthMethod
from pggate.proto import codes
from pggate.proto.errors import ClientError

# auth.c auth_failed(): the client-visible failure text for each method.
_METHOD_FAILURE: dict[AuthMethod, str] = {
    AuthMethod.TRUST: '"trust" authentication failed for user "{}"',
    AuthMethod.PASSWORD: 'password authentication failed for user "{}"',
    AuthMethod.MD5: 'password authentication failed for user "{}"',
    AuthMethod.SCRAM_SHA_256: 'password authentication failed for user "{}"',
    AuthMethod.GSS: 'GSSAPI authentication failed for user "{}"',
    AuthMethod.CERT: 'certificate authentication failed for user "{}"',
    AuthMethod.IDENT: 'Ident authentication failed for user "{}"',
    AuthMethod.PEER: 'Peer authentication failed for user "{}"',
    AuthMethod.PAM: 'PAM authentication failed for user "{}"',
    AuthMethod.LDAP: 'LDAP authentication failed for user "{}"',
    AuthMethod.RADIUS: 'RADIUS authentication failed for user "{}"',
    AuthMethod.OAUTH: 'OAuth bearer authentication failed for user "{}"',
}


def method_failure(method: AuthMethod, user: str, *, log_detail: str | None = None) -> ClientError:
    """The FATAL a failed method sends (28P01 for password methods, 28000 otherwise)."""
    text = _METHOD_FAILURE.get(method, 'authentication failed for user "{}"').format(user)
    sqlstate = (
        codes.SQLSTATE_INVALID_PASSWORD
        if method in PASSWORD_METHODS
        else codes.SQLSTATE_INVALID_AUTHORIZATION
    )
    return ClientError(sqlstate, text, log_detail=log_detail)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the TLS layer learned about the client's certificate."""

    verified: bool  # a certificate was presented and verified against ssl_ca_file
    common_name: str | None
    distinguished_name: str | None  # RFC 2253, as PostgreSQL's X509_NAME_print_ex


def requires_certificate(rule: HbaRule) -> bool:
    return rule.clientcert is not None or rule.method is AuthMethod.CERT


def check_before_auth(rule: HbaRule, peer: PeerCertificate | None, ca_loaded: bool) -> None:
    """ClientAuthentication's gate: a line asking for a certificate needs a verified one."""
    if not requires_certificate(rule):
        return
    if not ca_loaded:
        raise ClientError(
            codes.SQLSTATE_CONFIG_FILE_ERROR,
            "client certificates can only be checked if a root certificate store is available",
        )
    if peer is None or not peer.verified:
        raise ClientError(
            codes.SQLSTATE_INVALID_AUTHORIZATION, "connection requires a valid client certificate"
        )


def authenticated_identity(peer: PeerCertificate) -> str:
    """The identity logged for method ``cert``: always the DN (auth.c CheckCertAuth)."""
    return peer.distinguished_name or ""


def check_name(rule: HbaRule, peer: PeerCertificate, user: str, ident: IdentMaps) -> None:
    """CheckCertAuth after the method: the certificate name must map to ``user``.

    Raises the method's failure (``cert``: certificate authentication failed) with the
    precise reason as log-only detail.
    """
    if rule.method is not AuthMethod.CERT and rule.clientcert != "verify-full":
        return
    use_dn = rule.clientname == "DN"
    name = peer.distinguished_name if use_dn else peer.common_name
    if not name:
        raise method_failure(
            rule.method,
            user,
            log_detail=(
                f'certificate authentication failed for user "{user}": '
                "client certificate contains no user name"
            ),
        )
    problem = ident.check_usermap(rule.usermap, user, name)
    if problem is None:
        return
    if rule.method is AuthMethod.CERT:
        raise method_failure(AuthMethod.CERT, user, log_detail=problem)
    kind = "DN" if use_dn else "CN"
    raise method_failure(
        rule.method,
        user,
        log_detail=(
            f'certificate validation (clientcert=verify-full) failed for user "{user}": '
            f"{kind} mismatch"
        ),
    )
