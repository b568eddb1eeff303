"""Database and role name tests shared by pg_hba.conf and pg_ident.conf matching.

Mirrors ``hba.c:check_db``, ``check_role`` and ``is_member``: keywords only when unquoted,
then regular expressions, then exact (or, when asked, ASCII case-insensitive) comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pggate.hba.tokens import AuthToken, regex_search
from pggate.pgtext import ascii_lower

Replication = Literal["none", "physical", "logical"]


def is_member(role: str, roles: frozenset[str] | None) -> bool:
    """Is the connecting user (directly or indirectly) a member of ``role``?

    ``roles`` is supplied by the caller (``ConnectionFacts.roles``); superuser status does not
    imply membership (``is_member_of_role_nosuper``).
    """
    if roles is None:
        raise ValueError("role membership is needed to evaluate this rule but was not looked up")
    return role in roles


def role_matches(
    tokens: Iterable[AuthToken],
    user: str,
    roles: frozenset[str] | None,
    *,
    case_insensitive: bool = False,
) -> bool:
    """``check_role``: ``+role``, ``all``, regex, then the name itself."""
    for token in tokens:
        if token.is_member_check:
            if is_member(token.string[1:], roles):
                return True
        elif token.is_keyword("all"):
            return True
        elif token.regex is not None:
            if regex_search(token, user):
                return True
        elif case_insensitive:
            if ascii_lower(token.string) == ascii_lower(user):
                return True
        elif token.string == user:
            return True
    return False


def database_matches(
    tokens: Iterable[AuthToken],
    database: str,
    user: str,
    roles: frozenset[str] | None,
    replication: Replication,
) -> bool:
    """``check_db``: physical replication matches only ``replication``; ``replication`` never
    matches anything else."""
    for token in tokens:
        if replication == "physical":
            if token.is_keyword("replication"):
                return True
        elif token.is_keyword("all"):
            return True
        elif token.is_keyword("sameuser"):
            if database == user:
                return True
        elif token.is_keyword("samerole") or token.is_keyword("samegroup"):
            if is_member(database, roles):
                return True
        elif token.is_keyword("replication"):
            continue
        elif token.regex is not None:
            if regex_search(token, database):
                return True
        elif token.string == database:
            return True
    return False
