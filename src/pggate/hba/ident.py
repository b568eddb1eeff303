"""pg_ident.conf: user-name maps (``hba.c:parse_ident_line``, ``check_ident_usermap``,
``check_usermap``), PostgreSQL 16+ semantics.

``MAPNAME SYSTEM-USERNAME PG-USERNAME``. A system name starting with ``/`` is a regex whose
first capture group replaces the first ``\\1`` of the PG name; the PG name may be ``all``,
``+role``, a regex, or a plain (possibly quoted) name. Failures come back as the exact LOG
line PostgreSQL writes; the client only ever sees the method's generic failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pggate.hba.names import role_matches
from pggate.hba.tokens import (
    AuthLine,
    AuthToken,
    compile_token,
    parse_auth_file,
)
from pggate.pgtext import FileSource, ascii_lower
from pggate.proto.messages import wire_bytes, wire_str


@dataclass(frozen=True, slots=True)
class IdentLine:
    """One map entry, with where it came from."""

    map_name: str
    system_user: AuthToken
    pg_user: AuthToken
    file: str
    line_number: int


@dataclass(frozen=True, slots=True)
class IdentMaps:
    """A loaded pg_ident.conf (possibly empty: unlike pg_hba.conf that is fine)."""

    lines: tuple[IdentLine, ...] = ()
    needs_roles: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "needs_roles", any(line.pg_user.is_member_check for line in self.lines)
        )

    def check_usermap(
        self,
        map_name: str | None,
        pg_user: str,
        system_user: str,
        *,
        case_insensitive: bool = False,
        roles: frozenset[str] | None = None,
    ) -> str | None:
        """None if ``system_user`` may log in as ``pg_user``, else PostgreSQL's LOG message.

        No map (None or empty) means the names must be equal. ``roles`` is the membership of
        ``pg_user`` as in ``ConnectionFacts.roles``; needed only for ``+role`` entries.
        """
        if not map_name:
            if case_insensitive:
                equal = ascii_lower(pg_user) == ascii_lower(system_user)
            else:
                equal = pg_user == system_user
            if equal:
                return None
            return (
                f"provided user name ({pg_user}) and authenticated user name ({system_user}) "
                "do not match"
            )
        for line in self.lines:
            if line.map_name != map_name:
                continue
            found, error = _check_line(line, pg_user, system_user, case_insensitive, roles)
            if error is not None:
                return error
            if found:
                return None
        return (
            f'no match in usermap "{map_name}" for user "{pg_user}" authenticated as '
            f'"{system_user}"'
        )


def _check_line(
    line: IdentLine,
    pg_user: str,
    system_user: str,
    case_insensitive: bool,
    roles: frozenset[str] | None,
) -> tuple[bool, str | None]:
    """(authorized, error message) for one entry of the requested map."""
    target = line.pg_user
    if line.system_user.regex is None:
        if case_insensitive:
            same = ascii_lower(line.system_user.string) == ascii_lower(system_user)
        else:
            same = line.system_user.string == system_user
        if not same:
            return False, None
    else:
        regex = line.system_user.regex
        if not _substitutes_group(target):
            if not regex.search(system_user):
                return False, None
        else:
            matched, group = regex.first_group(system_user)
            if not matched:
                return False, None
            if group is None:
                return False, (
                    f'regular expression "{line.system_user.string[1:]}" has no '
                    f'subexpressions as requested by backreference in "{target.string}"'
                )
            # The first \1 becomes the group's bytes (a byte-wise copy in hba.c, which may cut
            # a multibyte character); the result is compared literally afterwards.
            expanded = wire_bytes(target.string).replace(b"\\1", group, 1)
            target = AuthToken(wire_str(expanded), quoted=True)
    return role_matches((target,), pg_user, roles, case_insensitive=case_insensitive), None


def _substitutes_group(pg_user: AuthToken) -> bool:
    """Does a match put group 1 into this PG-USERNAME? Only a plain name (not ``+role``, not a
    regex) containing ``\\1`` (``check_ident_usermap``)."""
    regex = pg_user.string.startswith("/")
    return not pg_user.is_member_check and not regex and "\\1" in pg_user.string


def parse_ident_line(line: AuthLine) -> IdentLine:
    """Validate one tokenized line; raises ConfigError with the line's file and number."""
    fields = iter(line.fields)

    def single(tokens: tuple[AuthToken, ...] | None) -> AuthToken:
        if tokens is None:
            raise line.config_error("missing entry at end of line")
        if len(tokens) > 1:
            raise line.config_error("multiple values in ident field")
        return tokens[0]

    map_name = single(next(fields)).string
    system_user = single(next(fields, None))
    pg_user = single(next(fields, None))
    return IdentLine(
        map_name=map_name,
        system_user=compile_token(system_user, line, captures=_substitutes_group(pg_user)),
        pg_user=compile_token(pg_user, line),
        file=line.file,
        line_number=line.line_number,
    )


def load_ident(path: str, files: FileSource, *, warn: Callable[[str], None]) -> IdentMaps:
    """Read and validate pg_ident.conf; raises ConfigError (``AuthFileError`` listing every
    bad line). PostgreSQL keeps running without maps when this fails at start-up."""
    return IdentMaps(tuple(parse_auth_file(path, files, warn, parse_ident_line)))
