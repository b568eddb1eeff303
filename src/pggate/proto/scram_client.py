"""pggate's client half of SCRAM-SHA-256(-PLUS) toward its backend (libpq fe-auth-scram.c).

Two kinds of secret drive it: a password (pggate's own role, from the ``backend`` conninfo or
its passfile: Hi() runs here, so the backend's iteration count is capped, see below), or the
ClientKey/ServerKey recovered from the client's own SCRAM login to pggate (PostgreSQL 18's
``scram_client_key`` pass-through: no Hi(), the password is never known).

Channel binding follows libpq (``pg_SASL_init``, ``build_client_first_message``): over TLS,
SCRAM-SHA-256-PLUS with ``tls-server-end-point`` of the *backend's* certificate when the
server offers it and ``channel_binding`` is not ``disable``; the GS2 flag ``y`` when the client
could bind but the server offered no -PLUS; ``n`` without TLS.

The iteration cap: a server chooses ``i``, and a hostile or compromised one could ask for
2^31 rounds of PBKDF2 per login to burn the gateway's CPU (the CVE-2026-42198 class). libpq
computes whatever it is told; pggate refuses a count above ``max_iterations`` before running
Hi() and says so in its log.
"""

from __future__ import annotations

import base64
import enum
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from pggate.proto import codes, password_math
from pggate.proto.errors import ClientError

# fe-auth-scram.c SCRAM_RAW_NONCE_LEN.
RAW_NONCE_LENGTH: Final = 18


class Binding(enum.Enum):
    """The GS2 channel-binding flag of the exchange (RFC 5802 section 7)."""

    NONE = "n"  # the client does not support channel binding (no TLS)
    NOT_OFFERED = "y"  # the client could, the server did not offer -PLUS
    BOUND = "p"  # SCRAM-SHA-256-PLUS, tls-server-end-point


@dataclass(frozen=True, slots=True, repr=False)
class ScramKeys:
    """The client's ClientKey and ServerKey (never logged)."""

    client_key: bytes
    server_key: bytes


class ScramClientError(Exception):
    """A refusal in libpq's words (fe-auth-scram.c); the caller turns it into 08006."""


def _attributes(message: str, names: str) -> list[str]:
    """The values of attributes ``names`` in order (fe-auth-scram.c read_attr_value)."""
    parts = message.split(",")
    values = []
    for index, name in enumerate(names):
        part = parts[index] if index < len(parts) else ""
        if not part.startswith(f"{name}="):
            raise ScramClientError(f'malformed SCRAM message (attribute "{name}" expected)')
        values.append(part[2:])
    return values


class ScramClient:
    """One SCRAM exchange: :meth:`client_first`, :meth:`client_final`, :meth:`server_final`."""

    def __init__(
        self,
        secret: str | ScramKeys,
        *,
        binding: Binding,
        end_point_hash: bytes | None,
        max_iterations: int,
        nonce: str | None = None,
    ) -> None:
        if binding is Binding.BOUND and end_point_hash is None:
            raise ValueError("channel binding needs the server's certificate hash")
        self._secret = secret
        self._binding = binding
        self._end_point_hash = end_point_hash or b""
        self._max_iterations = max_iterations
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(RAW_NONCE_LENGTH)).decode()
        self._first_bare = f"n=,r={self._nonce}"  # libpq sends no user name: the server has it
        self._auth_message = b""
        self._server_key = b""
        self.finished = False

    @property
    def mechanism(self) -> str:
        return codes.SCRAM_SHA_256_PLUS if self.bound else codes.SCRAM_SHA_256

    @property
    def bound(self) -> bool:
        return self._binding is Binding.BOUND

    def _gs2_header(self) -> str:
        if self._binding is Binding.BOUND:
            return f"p={codes.SCRAM_CHANNEL_BINDING_TYPE},,"
        return f"{self._binding.value},,"

    def client_first(self) -> bytes:
        return f"{self._gs2_header()}{self._first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        """read_server_first_message, then build_client_final_message."""
        text = server_first.decode("utf-8", "replace")
        nonce, salt_b64, iterations_text = _attributes(text, "rsi")
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise ScramClientError("invalid SCRAM response (nonce mismatch)")
        salt = password_math.b64decode_strict(salt_b64)
        if salt is None:
            raise ScramClientError("malformed SCRAM message (invalid salt)")
        try:
            iterations = int(iterations_text, 10)
        except ValueError:
            iterations = 0
        if iterations < 1:
            raise ScramClientError("malformed SCRAM message (invalid iteration count)")
        keys = self._keys(salt, iterations)
        cbind = self._gs2_header().encode()
        if self._binding is Binding.BOUND:
            cbind += self._end_point_hash
        without_proof = f"c={base64.b64encode(cbind).decode()},r={nonce}"
        self._auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        self._server_key = keys.server_key
        proof = password_math.client_proof(keys.client_key, self._auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def server_final(self, message: bytes) -> None:
        """read_server_final_message and verify_server_signature."""
        text = message.decode("utf-8", "replace")
        if text.startswith("e="):
            raise ScramClientError(f"error received from server in SCRAM exchange: {text[2:]}")
        (signature_b64,) = _attributes(text, "v")
        given = password_math.b64decode_strict(signature_b64)
        if given is None or len(given) != codes.SCRAM_KEY_LENGTH:
            raise ScramClientError("malformed SCRAM message (invalid server signature)")
        expected = password_math.scram_signature(self._server_key, self._auth_message)
        if not hmac.compare_digest(expected, given):
            raise ScramClientError("incorrect server signature")
        self.finished = True

    def _keys(self, salt: bytes, iterations: int) -> ScramKeys:
        if isinstance(self._secret, ScramKeys):
            return self._secret  # pass-through: Hi() is not run, the count costs nothing
        if iterations > self._max_iterations:
            raise ScramClientError(
                f"server asked for {iterations} SCRAM iterations, more than "
                f"backend_scram_max_iterations ({self._max_iterations})"
            )
        try:
            prepared = password_math.sasl_prepare(self._secret.encode("utf-8"))
        except ClientError as exc:
            raise ScramClientError(exc.message) from None
        salted = password_math.salted_password(prepared, salt, iterations)
        return ScramKeys(password_math.client_key(salted), password_math.server_key(salted))


__all__ = ["RAW_NONCE_LENGTH", "Binding", "ScramClient", "ScramClientError", "ScramKeys"]
