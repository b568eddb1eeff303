"""The arithmetic of PostgreSQL's password authentication, for both ends of a login (no state).

pggate computes the same things as a server (``auth/password.py``, through ``auth/verifiers.py``)
and as a client logging in to its backend (``proto/backend.py``). This module is their one home.
It sits in ``proto/``, the lowest floor, so that
``proto/backend.py`` can use it without reaching up into ``auth/``.

SCRAM-SHA-256 (RFC 5802 section 3, RFC 7677), as PostgreSQL's src/common/scram-common.c and
src/interfaces/libpq/fe-auth-scram.c compute it::

    SaltedPassword  := Hi(Normalize(password), salt, i)   scram_SaltedPassword
    ClientKey       := HMAC(SaltedPassword, "Client Key")  scram_ClientKey
    StoredKey       := H(ClientKey)                        scram_H
    ServerKey       := HMAC(SaltedPassword, "Server Key")  scram_ServerKey
    ClientSignature := HMAC(StoredKey, AuthMessage)
    ClientProof     := ClientKey XOR ClientSignature       calculate_client_proof
    ServerSignature := HMAC(ServerKey, AuthMessage)        verify_server_signature

Hi() is PBKDF2 with HMAC-SHA-256 and a single output block: ``hashlib.pbkdf2_hmac``. Normalize
is SASLprep with PostgreSQL's fall-back to the raw bytes (``sasl_prepare``, on scramp's saslprep;
both ends of a login apply the same rule: auth-scram.c and fe-auth-scram.c call pg_saslprep).

MD5: src/common/md5_common.c ``pg_md5_encrypt`` serves twice, as libpq's fe-auth.c
``pg_password_sendauth`` chains it: the stored verifier is ``pg_md5_encrypt(password, user)``,
and the answer to AuthenticationMD5Password is ``pg_md5_encrypt`` of that verifier's hex digits
with the four salt bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

from scramp.utils import ScramException
from scramp.utils import saslprep as _scramp_saslprep

from pggate.proto import codes
from pggate.proto.errors import ClientError

_HASH: Final = "sha256"  # SCRAM-SHA-256 is the only SCRAM mechanism PostgreSQL implements
MD5_PREFIX: Final = b"md5"


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, _HASH)


def salted_password(prepared: bytes, salt: bytes, iterations: int) -> bytes:
    """scram_SaltedPassword: RFC 5802 Hi(), i.e. PBKDF2-HMAC-SHA-256, of the prepared password."""
    return hashlib.pbkdf2_hmac(_HASH, prepared, salt, iterations)


def client_key(salted: bytes) -> bytes:
    """scram_ClientKey: HMAC(SaltedPassword, "Client Key")."""
    return _hmac(salted, b"Client Key")


def server_key(salted: bytes) -> bytes:
    """scram_ServerKey: HMAC(SaltedPassword, "Server Key")."""
    return _hmac(salted, b"Server Key")


def stored_key(key: bytes) -> bytes:
    """scram_H of ClientKey: the StoredKey of a verifier."""
    return hashlib.sha256(key).digest()


def scram_signature(key: bytes, auth_message: bytes) -> bytes:
    """ClientSignature (key = StoredKey) or ServerSignature (key = ServerKey)."""
    return _hmac(key, auth_message)


def xor_keys(a: bytes, b: bytes) -> bytes:
    """ClientKey XOR ClientSignature = ClientProof, and ClientProof XOR ClientSignature = ClientKey.

    The second is how the server recovers ClientKey (auth-scram.c verify_client_proof). Both
    operands are SCRAM_KEY_LEN bytes; a length mismatch is a bug, hence ``strict=True``.
    """
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def client_proof(key: bytes, auth_message: bytes) -> bytes:
    """fe-auth-scram.c calculate_client_proof, from ClientKey (``key``) and the AuthMessage."""
    return xor_keys(key, scram_signature(stored_key(key), auth_message))


def pg_md5_encrypt(passwd: bytes, salt: bytes) -> bytes:
    """md5_common.c pg_md5_encrypt: ``md5`` + hex(md5(passwd || salt)), lowercase."""
    return MD5_PREFIX + hashlib.md5(passwd + salt).hexdigest().encode("ascii")


def md5_response(stored: bytes, salt: bytes) -> bytes:
    """The answer to AuthenticationMD5Password, from the stored ``md5...`` verifier and the salt.

    fe-auth.c pg_password_sendauth: ``pg_md5_encrypt(verifier + strlen("md5"), salt, 4)``; the
    server computes the same from pg_authid to compare (crypt.c md5_crypt_verify).
    """
    return pg_md5_encrypt(stored[len(MD5_PREFIX) :], salt)


def sasl_prepare(password: bytes) -> bytes:
    """auth-scram.c's SASLprep rule: the prepared password, or the raw bytes if it cannot be.

    pg_saslprep refuses passwords over 1024 bytes with an ERROR, sends ASCII through unchanged,
    and reports invalid UTF-8 or prohibited characters, in which case the raw bytes are hashed.
    """
    if len(password) > codes.MAX_PASSWORD_LENGTH:
        raise ClientError(codes.SQLSTATE_PROGRAM_LIMIT_EXCEEDED, "password too long")
    if password.isascii():
        return password
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return password
    try:
        prepared: str = _scramp_saslprep(text)
    except ScramException:
        return password
    return prepared.encode("utf-8")


def b64decode_strict(text: str | bytes) -> bytes | None:
    """Base64 with padding and nothing else (pg_b64_decode refuses whitespace too), or None."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
