"""The I/O that authentication needs besides the catalog: the gateway's mock SCRAM nonce and
the GSSAPI acceptor credentials of the snapshot's keytab. The method itself (auth.c's
ClientAuthentication) runs in :class:`~pggate.login.LoginMachine`.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from pggate.proto.errors import ClientError
from pggate.server import catalog

if TYPE_CHECKING:
    from gssapi.raw.creds import Creds

    from pggate.policy import GssState, Policy

log = logging.getLogger("pggate.auth")


class MockNonce:
    """The per-gateway secret behind mock SCRAM salts (auth-scram.c mock_scram_secret).

    PostgreSQL keeps one in pg_control so an unknown role gets the same fake salt every time;
    pggate uses the backend's own when its role may read it, else a random one per process.
    """

    def __init__(self) -> None:
        self.value: bytes | None = None

    async def get(self, policy: Policy) -> bytes:
        if self.value is None:
            try:
                rows = await catalog.run_query(
                    policy.backend,
                    "SELECT mock_authentication_nonce FROM pg_catalog.pg_control_init()",
                )
                self.value = bytes.fromhex(str(rows[0][0]))
            except (ClientError, ValueError, IndexError):
                log.info("using a per-process mock authentication nonce")
                self.value = secrets.token_bytes(32)
        return self.value


def acceptor(gss: GssState) -> Creds | None:
    """The acceptor credentials of the snapshot's keytab for method ``gss`` (None: GSSAPI
    encryption is off, and the process's default acceptor is used, as before any keytab was
    named). A keytab GSSAPI cannot use raises :class:`~pggate.transport.GssError`."""
    if gss.keytab is None:
        return None
    # Imported here: python-gssapi loads only when a pg_hba.conf line asks for gss.
    from pggate.transport import gss as gss_transport

    return gss_transport.acceptor_credentials(gss.keytab)


__all__ = ["MockNonce", "acceptor"]
