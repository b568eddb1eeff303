"""GSSAPI is optional: python-gssapi (which needs MIT Kerberos to build) is the extra
``pggate[gss]``, so that ``pip install pggate`` needs neither a C compiler nor Kerberos headers.

This module is the one place that asks whether it is installed. A gateway without it does what
PostgreSQL built without GSSAPI (no ``ENABLE_GSS``) does, with PostgreSQL's texts, and a HINT
naming the extra (:data:`HINT`):

* GSSENCRequest is answered ``N``, as when no keytab is configured (``krb_server_keyfile``
  cannot be set, below).
* A pg_hba.conf line with method ``gss`` refuses the file: ``invalid authentication method
  "gss": not supported by this build`` (hba.c ``parse_hba_line``, ``unsupauth``).
* A ``hostgssenc`` line loads with the warning ``hostgssenc record cannot match because GSSAPI
  is not supported by this build`` (hba.c) and never matches: no connection is GSS-encrypted.
* A non-empty ``krb_server_keyfile`` is an error where it is set. PostgreSQL has no text for
  this (it accepts the parameter and ignores it); in pggate naming a keytab is what turns
  GSSAPI on, so it asks for what is not there.

python-gssapi is imported on first need only: a gateway whose configuration has no GSS in it
never loads it, nor libkrb5. The modules that drive it (``transport.gss``, ``auth.gss``) still
import without it, and refuse to build a channel or an exchange.
"""

from __future__ import annotations

import functools

from pggate.errors import PggateError

HINT = "Install pggate's GSSAPI support: pip install 'pggate[gss]'."
KEYFILE_MESSAGE = 'parameter "krb_server_keyfile" requires GSSAPI support, which is not installed'


@functools.cache
def import_error() -> ImportError | None:
    """Why python-gssapi cannot be imported, or None when it can (tried once per process)."""
    try:
        import gssapi.raw  # noqa: F401
    except ImportError as exc:
        return exc
    return None


def available() -> bool:
    return import_error() is None


def missing_detail() -> str | None:
    """The DETAIL for an operator: the import failure, None when python-gssapi imports."""
    error = import_error()
    return None if error is None else f"python-gssapi could not be imported: {error}"


def require() -> None:
    """Raise unless python-gssapi imports. A guard for the code about to use it: the checks
    of pggate.conf (config.load) and pg_hba.conf (hba.rules) keep a configuration that needs it
    from loading in the first place."""
    error = import_error()
    if error is not None:
        raise PggateError(f"GSSAPI support is not installed ({error}); {HINT}") from error


__all__ = [
    "HINT",
    "KEYFILE_MESSAGE",
    "available",
    "import_error",
    "missing_detail",
    "require",
]
