"""The GSSAPI channel's failure, in a module of its own: the server catches it (as any
:class:`~pggate.transport.channel.ChannelError`) without importing python-gssapi, which only
:mod:`pggate.transport.gss` needs."""

from __future__ import annotations

from pggate.transport.channel import ChannelError


class GssError(ChannelError):
    """A GSSAPI failure: PostgreSQL logs it (COMMERROR) and drops the connection.

    ``message`` is PostgreSQL's log message (``could not accept GSSAPI security context``,
    ``oversize GSSAPI packet sent by the client (70000 > 65532)``, ...); ``detail`` is the
    GSSAPI status text PostgreSQL logs as DETAIL (``pg_GSS_error``: major messages, ``": "``,
    minor messages), when the failure came from the GSSAPI library. Nothing is sent to the
    client: there is no protocol message for these failures (``output`` stays empty).
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)

    @property
    def log_message(self) -> str:
        """One line for logs that have no DETAIL field."""
        return self.message if self.detail is None else f"{self.message}: {self.detail}"


__all__ = ["GssError"]
