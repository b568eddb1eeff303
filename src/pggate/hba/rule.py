"""One validated pg_hba.conf line: the data that matching, authentication and logs read.

Its own module so that matching (``match.py``) and loading (``rules.py``) both use it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pggate.hba.address import AddressSpec
from pggate.hba.methods import AuthMethod, ConnType
from pggate.hba.tokens import AuthToken

ClientCert = Literal["verify-ca", "verify-full"]
ClientName = Literal["CN", "DN"]


@dataclass(frozen=True, slots=True)
class HbaRule:
    """One pg_hba.conf line after validation.

    ``method`` is the effective method (``ident`` on a ``local`` line is ``peer``).
    ``options`` keeps every ``name=value`` in file order; the typed fields are the ones the
    gateway acts on. ``clientcert`` is ``verify-full`` for method ``cert``.
    """

    conn_type: ConnType
    databases: tuple[AuthToken, ...]
    users: tuple[AuthToken, ...]
    address: AddressSpec | None
    method: AuthMethod
    file: str
    line_number: int
    raw_line: str
    options: tuple[tuple[str, str], ...] = ()
    usermap: str | None = None
    clientcert: ClientCert | None = None
    clientname: ClientName = "CN"
    include_realm: bool = False
    krb_realm: str | None = None

    def option(self, name: str) -> str | None:
        """The value of option ``name`` (the last one wins, as in PostgreSQL)."""
        found = None
        for key, value in self.options:
            if key == name:
                found = value
        return found

    @property
    def log_detail(self) -> str:
        """The log-only DETAIL PostgreSQL 16+ adds to authentication failures."""
        return f'Connection matched file "{self.file}" line {self.line_number}: "{self.raw_line}"'
