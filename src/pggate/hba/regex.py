"""PostgreSQL's regular expressions for pg_hba.conf and pg_ident.conf, matched in linear time.

Owns: reading a ``/regex`` token the way PostgreSQL does and evaluating it with RE2 (google-re2),
whose matching time is linear in the subject, so that no pattern can stall the event loop.

What PostgreSQL does (``hba.c``: ``regcomp_auth_token``, ``regexec_auth_token``): the text after
the ``/`` is compiled with ``pg_regcomp(..., REG_ADVANCED, C_COLLATION_OID)`` and searched,
unanchored, with ``pg_regexec``. The postmaster's encoding is SQL_ASCII, so
``pg_mb2wchar_with_len`` turns every *byte* of pattern and subject into one character: matching
is byte-wise, and with the C collation the character classes and case folding are ASCII-only
(``regc_pg_locale.c``), except ``[[:cntrl:]]``, hard-wired to 0x00-0x1f and 0x7f-0x9f
(``regc_locale.c:cclasscvec``).

How pggate does it: a parser that follows PostgreSQL's own lexer and grammar
(``src/backend/regex/regc_lex.c``: ``prefixes``, ``next``, ``lexescape``, ``lexdigits``;
``regcomp.c``: ``parse``, ``parsebranch``, ``parseqatom``, ``bracket``, ``brackpart``,
``scannum``; ``regc_locale.c``: ``element``, ``range``, ``eclass``, ``lookupcclass``,
``cclasscvec``, ``allcases``) so that it accepts exactly the Advanced Regular Expressions
(AREs, documentation section "9.7.3 POSIX Regular Expressions") PostgreSQL accepts and
rejects the others with PostgreSQL's own message (``regerrs.h``). The parse tree is then written
out in RE2 syntax with nothing left to RE2's interpretation: every atom becomes an explicit class
of bytes (case folding is applied here, ASCII-only), ``$`` becomes ``\\z``, ``\\y`` becomes
RE2's ``\\b`` (the same ASCII word characters), and RE2 runs in Latin-1 mode on the UTF-8 bytes.

Supported: the whole ARE syntax of regc_lex.c/regcomp.c (escapes, brackets with classes,
collating elements and equivalence classes, bounds, non-greedy quantifiers, ``(?:``, ``(?#``),
the ``***=`` and ``***:`` directors and the embedded options ``c i m n p q s t w x`` at the
start. Refused, with a reason, is what RE2 cannot evaluate with exactly PostgreSQL's meaning:
back-references, lookahead and lookbehind, ``\\m``/``\\M`` where they are not equivalent to a
word boundary, BRE/ERE syntax (options ``b``, ``e``), and patterns PostgreSQL itself may find
"too complex" (see ``MAX_ATOMS``).

``\\1`` in pg_ident.conf needs PostgreSQL's first capture group, which RE2's own submatch
rules (Perl's, even with ``longest_match``) do not give. RE2 with ``longest_match`` gives the
overall match (leftmost, then longest: ``regexec.c:find`` for a greedy RE); the group is then
found by PostgreSQL's dissection rule for a concatenation (``regexec.c:ccondissect``: the left
part takes the longest span that still lets the right part match), asking RE2 for matches
anchored within the span, with the subject's bytes around it as context. That is exact for a
first group that is not repeated (or only ``?``) and not inside an alternation, in an RE
without non-greedy quantifiers; anything else is refused where the group is used, i.e. for an
ident line whose PG user contains ``\\1``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Final, Literal, NoReturn

import re2

from pggate.proto.messages import wire_bytes

# --- PostgreSQL's compile errors (src/include/regex/regerrs.h) ------------------------------------
_BADPAT: Final = "invalid regexp (reg version 0.8)"
_ECOLLATE: Final = "invalid collating element"
_ECTYPE: Final = "invalid character class"
_EESCAPE: Final = "invalid escape \\ sequence"
_ESUBREG: Final = "invalid backreference number"
_EBRACK: Final = "brackets [] not balanced"
_EPAREN: Final = "parentheses () not balanced"
_EBRACE: Final = "braces {} not balanced"
_BADBR: Final = "invalid repetition count(s)"
_ERANGE: Final = "invalid character range"
_BADRPT: Final = "quantifier operand invalid"
_ASSERT: Final = '"can\'t happen" -- you found a bug'
_BADOPT: Final = "invalid embedded option"

# --- limits --------------------------------------------------------------------------------------
DUPMAX: Final = 255  # regex.h: RE_DUP_MAX, the largest {m,n} bound
CHR_MAX: Final = 0x7FFFFFFE  # regcustom.h: CHR_MAX, the largest chr value an escape may name
# PostgreSQL answers "regular expression is too complex" when its NFA outgrows
# REG_MAX_COMPILE_SPACE (regguts.h), which depends on NFA internals, not on any simple measure of
# the pattern. Measured against PostgreSQL 15: chains of optional atoms fail from ~1,700 atoms,
# word-boundary constraints mixed with optional atoms from 17 constraints (each one can double
# the NFA), and a few constraints inside a loop already (see _looping_anchor). Staying well
# below these means pggate never accepts what PostgreSQL rejects.
MAX_ATOMS: Final = 1000
MAX_CONTEXT_CONSTRAINTS: Final = 8
MAX_NESTING: Final = 64  # parentheses; keeps the recursive parser far from Python's stack limit

_NOT_SUPPORTED: Final = "not supported by pggate: "

# --- compile flags (src/include/regex/regex.h) ---------------------------------------------------
_EXTENDED: Final = 0o1
_ADVF: Final = 0o2
_ADVANCED: Final = _EXTENDED | _ADVF
_QUOTE: Final = 0o4
_ICASE: Final = 0o10
_NLSTOP: Final = 0o20
_NLANCH: Final = 0o40
_NEWLINE: Final = _NLSTOP | _NLANCH
_EXPANDED: Final = 0o100

# --- lexical contexts (regc_lex.c) ---------------------------------------------------------------
_L_ERE: Final = 1
_L_Q: Final = 3
_L_EBND: Final = 4
_L_BRACK: Final = 6
_L_CEL: Final = 7
_L_ECL: Final = 8
_L_CCL: Final = 9
_CLOSERS: Final = {_L_CEL: ".", _L_ECL: "=", _L_CCL: ":"}

# --- token types (regcomp.c); punctuation tokens are the character itself -----------------------
_EMPTY: Final = "EMPTY"
_EOS: Final = "EOS"
_PLAIN: Final = "PLAIN"
_DIGIT: Final = "DIGIT"
_BACKREF: Final = "BACKREF"
_COLLEL: Final = "COLLEL"
_ECLASS: Final = "ECLASS"
_CCLASS: Final = "CCLASS"
_END: Final = "END"
_CCLASSS: Final = "CCLASSS"
_CCLASSC: Final = "CCLASSC"
_RANGE: Final = "RANGE"
_LACON: Final = "LACON"
_WBDRY: Final = "WBDRY"
_NWBDRY: Final = "NWBDRY"
_SBEGIN: Final = "SBEGIN"
_SEND: Final = "SEND"


# --- byte sets: an int with bit b set when byte b is a member ------------------------------------
def _bits(*members: int | tuple[int, int]) -> int:
    mask = 0
    for member in members:
        low, high = (member, member) if isinstance(member, int) else member
        mask |= ((1 << (high - low + 1)) - 1) << low
    return mask


_ALL: Final = _bits((0, 255))
_NL: Final = _bits(0x0A)
_DIGITS: Final = _bits((0x30, 0x39))
_UPPERS: Final = _bits((0x41, 0x5A))
_LOWERS: Final = _bits((0x61, 0x7A))
_ALPHAS: Final = _UPPERS | _LOWERS
_ALNUMS: Final = _ALPHAS | _DIGITS
_WORD: Final = _ALNUMS | _bits(0x5F)
_GRAPHS: Final = _bits((0x21, 0x7E))
# The C collation: libc's C-locale classes, restricted to ASCII by regc_pg_locale.c
# (PG_REGEX_LOCALE_C); ascii, blank, cntrl and xdigit are hard-wired in regc_locale.c.
_CLASSES: Final = {
    "alnum": _ALNUMS,
    "alpha": _ALPHAS,
    "ascii": _bits((0x00, 0x7F)),
    "blank": _bits(0x09, 0x20),
    "cntrl": _bits((0x00, 0x1F), (0x7F, 0x9F)),
    "digit": _DIGITS,
    "graph": _GRAPHS,
    "lower": _LOWERS,
    "print": _bits((0x20, 0x7E)),
    "punct": _GRAPHS & ~_ALNUMS,
    "space": _bits((0x09, 0x0D), 0x20),
    "upper": _UPPERS,
    "xdigit": _DIGITS | _bits((0x41, 0x46), (0x61, 0x66)),
    "word": _WORD,
}
_ESCAPE_CLASSES: Final = {"d": "digit", "s": "space", "w": "word"}

# regc_locale.c: cnames, the names [[.name.]] may use.
_CNAMES: Final = {
    "NUL": 0o0, "SOH": 0o1, "STX": 0o2, "ETX": 0o3, "EOT": 0o4, "ENQ": 0o5, "ACK": 0o6,
    "BEL": 0o7, "alert": 0o7, "BS": 0o10, "backspace": 0o10, "HT": 0o11, "tab": 0o11,
    "LF": 0o12, "newline": 0o12, "VT": 0o13, "vertical-tab": 0o13, "FF": 0o14,
    "form-feed": 0o14, "CR": 0o15, "carriage-return": 0o15, "SO": 0o16, "SI": 0o17,
    "DLE": 0o20, "DC1": 0o21, "DC2": 0o22, "DC3": 0o23, "DC4": 0o24, "NAK": 0o25,
    "SYN": 0o26, "ETB": 0o27, "CAN": 0o30, "EM": 0o31, "SUB": 0o32, "ESC": 0o33,
    "IS4": 0o34, "FS": 0o34, "IS3": 0o35, "GS": 0o35, "IS2": 0o36, "RS": 0o36,
    "IS1": 0o37, "US": 0o37, "space": 0x20, "exclamation-mark": 0x21,
    "quotation-mark": 0x22, "number-sign": 0x23, "dollar-sign": 0x24, "percent-sign": 0x25,
    "ampersand": 0x26, "apostrophe": 0x27, "left-parenthesis": 0x28,
    "right-parenthesis": 0x29, "asterisk": 0x2A, "plus-sign": 0x2B, "comma": 0x2C,
    "hyphen": 0x2D, "hyphen-minus": 0x2D, "period": 0x2E, "full-stop": 0x2E, "slash": 0x2F,
    "solidus": 0x2F, "zero": 0x30, "one": 0x31, "two": 0x32, "three": 0x33, "four": 0x34,
    "five": 0x35, "six": 0x36, "seven": 0x37, "eight": 0x38, "nine": 0x39, "colon": 0x3A,
    "semicolon": 0x3B, "less-than-sign": 0x3C, "equals-sign": 0x3D,
    "greater-than-sign": 0x3E, "question-mark": 0x3F, "commercial-at": 0x40,
    "left-square-bracket": 0x5B, "backslash": 0x5C, "reverse-solidus": 0x5C,
    "right-square-bracket": 0x5D, "circumflex": 0x5E, "circumflex-accent": 0x5E,
    "underscore": 0x5F, "low-line": 0x5F, "grave-accent": 0x60, "left-brace": 0x7B,
    "left-curly-bracket": 0x7B, "vertical-line": 0x7C, "right-brace": 0x7D,
    "right-curly-bracket": 0x7D, "tilde": 0x7E, "DEL": 0x7F,
}  # fmt: skip


def _tolower(c: int) -> int:
    """``pg_wc_tolower`` for the C collation: ASCII letters only."""
    return c + 32 if 0x41 <= c <= 0x5A else c


def _toupper(c: int) -> int:
    return c - 32 if 0x61 <= c <= 0x7A else c


def _chr_bits(c: int) -> int:
    """The set holding chr ``c``: empty when ``c`` is not a byte (a subject holds bytes only)."""
    return 1 << c if c <= 0xFF else 0


def _allcases(c: int) -> int:
    """``regc_locale.c:allcases``: ``c`` and its case counterparts."""
    return _chr_bits(_tolower(c)) | _chr_bits(_toupper(c))


def _range(a: int, b: int, icase: bool) -> int:
    """``regc_locale.c:range``: a..b (plus case counterparts), or PostgreSQL's range error."""
    if a != b and not a < b:
        raise _PgError(_ERANGE)
    mask = _bits((a, min(b, 0xFF))) if a <= 0xFF else 0
    if icase:
        for c in range(a, min(b, 0x7F) + 1):
            mask |= _allcases(c)
    return mask


def _cclass(name: str, icase: bool) -> int:
    """``cclasscvec``: lower and upper mean alpha when case-insensitive."""
    if icase and name in ("lower", "upper"):
        name = "alpha"
    return _CLASSES[name]


# --- parse tree ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Set:
    """One character from a set of bytes (folding already applied)."""

    mask: int


Anchor = Literal["bos", "eos", "bol", "eol", "word", "nonword", "wstart", "wend"]
_CONTEXT_ANCHORS: Final = frozenset({"bol", "eol", "word", "nonword", "wstart", "wend"})


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A constraint: ``^ $ \\A \\Z`` (bos/eos, or bol/eol in newline mode), ``\\y \\Y \\m \\M``."""

    kind: Anchor


@dataclass(frozen=True, slots=True)
class _Group:
    """Parentheses; ``number`` is the capture number, 0 for ``(?:``."""

    body: _Node
    number: int


@dataclass(frozen=True, slots=True)
class _Cat:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alt:
    branches: tuple[_Node, ...]


Preference = Literal["longer", "shorter"] | None


@dataclass(frozen=True, slots=True)
class _Rep:
    """A quantified atom; ``high`` None is unbounded. ``preference`` None is ``{m}``'s (none)."""

    body: _Node
    low: int
    high: int | None
    preference: Preference


_Node = _Set | _Anchor | _Group | _Cat | _Alt | _Rep
_EMPTY_NODE: Final = _Cat(())


class RegexRefused(Exception):
    """The pattern is refused: PostgreSQL's own compile error, or why pggate cannot evaluate it.

    ``reason`` completes PostgreSQL's ``invalid regular expression "%s": %s``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _PgError(Exception):
    """A compile error PostgreSQL itself reports (its ``regerrs.h`` text)."""


class _Unsupported(Exception):
    """PostgreSQL accepts the pattern, but pggate cannot evaluate it exactly."""


# --- lexer and parser ----------------------------------------------------------------------------
class _Parser:
    """``regcomp.c`` and ``regc_lex.c``, building a tree instead of an NFA.

    The pattern is read as Latin-1 text so that each character is one byte of its UTF-8 form,
    as ``pg_mb2wchar_with_len`` does under SQL_ASCII. Tokens are produced one ahead, exactly
    when PostgreSQL's ``NEXT()`` would, so that the first error found is PostgreSQL's first.
    """

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.now = 0
        self.stop = len(pattern)
        self.cflags = _ADVANCED
        self.lexcon = _L_ERE
        self.nexttype = _EMPTY
        self.nextvalue = 0
        self.lasttype = _EMPTY
        self.nsubexp = 0
        self.closed: set[int] = set()  # v->subs[n] != NULL: groups a back-reference may name
        self.depth = 0
        self.unsupported: str | None = None

    # -- helpers
    def refuse(self, reason: str) -> None:
        """Remember the first unsupported feature, but keep parsing for PostgreSQL's errors."""
        if self.unsupported is None:
            self.unsupported = reason

    def fail(self, message: str) -> NoReturn:
        raise _PgError(message)

    def set(self, kind: str, value: int = 0) -> None:
        self.nexttype = kind
        self.nextvalue = value

    def set_flagged(self, kind: str, follower: str) -> None:
        """``kind`` with value 0 if ``follower`` comes next (eaten), else 1: non-greedy ``*?``,
        ``}?``, and the complemented bracket ``[^``."""
        if self.next1(follower):
            self.now += 1
            self.set(kind, 0)
        else:
            self.set(kind, 1)

    def see(self, kind: str) -> bool:
        return self.nexttype == kind

    def ateos(self) -> bool:
        return self.now >= self.stop

    def next1(self, c: str) -> bool:
        return self.now < self.stop and self.p[self.now] == c

    @property
    def icase(self) -> bool:
        return bool(self.cflags & _ICASE)

    # -- lexstart / prefixes
    def start(self) -> None:
        """``lexstart``: directors and embedded options, then the first token."""
        self.prefixes()
        if self.cflags & _QUOTE:
            self.lexcon = _L_Q
        elif self.cflags & _ADVANCED != _ADVANCED:
            which = "ERE" if self.cflags & _EXTENDED else "BRE"
            raise _Unsupported(f"{which} syntax (embedded option b or e)")
        self.nexttype = _EMPTY
        self.next()

    def prefixes(self) -> None:
        """``***=``, ``***:`` and ``(?options)`` at the very start of the pattern."""
        p = self.p
        if self.stop >= 4 and p.startswith("***"):
            director = p[3]
            if director == "?":
                self.fail(_BADPAT)
            if director == "=":
                self.cflags = (self.cflags | _QUOTE) & ~(_ADVANCED | _EXPANDED | _NEWLINE)
                self.now = 4
                return
            if director != ":":
                self.fail(_BADRPT)
            self.now = 4
        if not (
            self.stop - self.now >= 3
            and p[self.now : self.now + 2] == "(?"
            and _is_alpha(p[self.now + 2])
        ):
            return
        self.now += 2
        while not self.ateos() and _is_alpha(p[self.now]):
            self.cflags = _option(self.cflags, p[self.now])
            self.now += 1
        if not self.next1(")"):
            self.fail(_BADOPT)
        self.now += 1
        if self.cflags & _QUOTE:
            self.cflags &= ~(_EXPANDED | _NEWLINE)

    # -- next
    def next(self) -> None:
        """``next``: the next token into nexttype/nextvalue (comments are skipped)."""
        while True:
            self.lasttype = self.nexttype
            if self.cflags & _EXPANDED and self.lexcon in (_L_ERE, _L_EBND):
                self.skip()
            if self.ateos():
                if self.lexcon in (_L_ERE, _L_Q):
                    self.set(_EOS)
                    return
                self.fail(_EBRACE if self.lexcon == _L_EBND else _EBRACK)
            c = self.p[self.now]
            self.now += 1
            if self.lexcon == _L_Q:
                self.set(_PLAIN, ord(c))
            elif self.lexcon == _L_EBND:
                self.bound_token(c)
            elif self.lexcon == _L_BRACK:
                self.bracket_token(c)
            elif self.lexcon in _CLOSERS:
                if c == _CLOSERS[self.lexcon] and self.next1("]"):
                    self.now += 1
                    self.lexcon = _L_BRACK
                    self.set(_END, ord(c))
                else:
                    self.set(_PLAIN, ord(c))
            elif not self.are_token(c):
                continue  # a (?#comment), skipped
            return

    def skip(self) -> None:
        """``skip``: white space and ``#`` comments in expanded syntax."""
        while True:
            while not self.ateos() and _is_space(self.p[self.now]):
                self.now += 1
            if self.ateos() or self.p[self.now] != "#":
                return
            while not self.ateos() and self.p[self.now] != "\n":
                self.now += 1

    def bound_token(self, c: str) -> None:
        if "0" <= c <= "9":
            self.set(_DIGIT, ord(c) - 0x30)
        elif c == ",":
            self.set(",")
        elif c == "}":
            self.lexcon = _L_ERE
            self.set_flagged("}", "?")
        else:
            self.fail(_BADBR)

    def bracket_token(self, c: str) -> None:
        if c == "]":
            if self.lasttype == "[":
                self.set(_PLAIN, ord(c))
            else:
                self.lexcon = _L_ERE
                self.set("]")
        elif c == "\\":
            if self.ateos():
                self.fail(_EESCAPE)
            self.lexescape()
            if self.nexttype not in (_PLAIN, _CCLASSS, _CCLASSC):
                self.fail(_EESCAPE)
        elif c == "-":
            if self.lasttype == "[" or self.next1("]"):
                self.set(_PLAIN, ord(c))
            else:
                self.set(_RANGE, ord(c))
        elif c == "[":
            if self.ateos():
                self.fail(_EBRACK)
            kind = self.p[self.now]
            self.now += 1
            if kind == ".":
                self.lexcon = _L_CEL
                self.set(_COLLEL)
            elif kind == "=":
                self.lexcon = _L_ECL
                self.set(_ECLASS)
            elif kind == ":":
                self.lexcon = _L_CCL
                self.set(_CCLASS)
            else:
                self.now -= 1
                self.set(_PLAIN, ord(c))
        else:
            self.set(_PLAIN, ord(c))

    def are_token(self, c: str) -> bool:
        """A mainline ARE token; False when a ``(?#...)`` comment was skipped instead."""
        if c == "|":
            self.set("|")
        elif c in "*+?":
            self.set_flagged(c, "?")
        elif c == "{":
            if self.cflags & _EXPANDED:
                self.skip()
            if self.ateos() or not "0" <= self.p[self.now] <= "9":
                self.set(_PLAIN, ord(c))  # "{" not followed by a digit is an ordinary character
            else:
                self.lexcon = _L_EBND
                self.set("{")
        elif c == "(":
            return self.paren_token()
        elif c == ")":
            self.set(")")
        elif c == "[":
            if self.p[self.now : self.now + 6] in ("[:<:]]", "[:>:]]"):
                self.set(self.p[self.now + 2])  # [[:<:]] and [[:>:]]: \m and \M
                self.now += 6
            else:
                self.lexcon = _L_BRACK
                self.set_flagged("[", "^")
        elif c in ".^$":
            self.set(c)
        elif c == "\\":
            if self.ateos():
                self.fail(_EESCAPE)
            self.lexescape()
        else:
            self.set(_PLAIN, ord(c))
        return True

    def paren_token(self) -> bool:
        if not self.next1("?"):
            self.set("(", 1)
            return True
        self.now += 1
        if self.ateos():
            self.fail(_BADRPT)
        kind = self.p[self.now]
        self.now += 1
        if kind == ":":
            self.set("(", 0)
        elif kind == "#":
            while not self.ateos() and self.p[self.now] != ")":
                self.now += 1
            if not self.ateos():
                self.now += 1
            return False
        elif kind in "=!":
            self.set(_LACON)
        elif kind == "<":
            if self.ateos():
                self.fail(_BADRPT)
            kind = self.p[self.now]
            self.now += 1
            if kind not in "=!":
                self.fail(_BADRPT)
            self.set(_LACON)
        else:
            self.fail(_BADRPT)
        return True

    def lexescape(self) -> None:
        """``lexescape``: an ARE backslash escape (backslash already eaten)."""
        c = self.p[self.now]
        self.now += 1
        if not (c.isascii() and c.isalnum()):
            self.set(_PLAIN, ord(c))
            return
        plain = {"a": 0o7, "b": 0o10, "B": 0x5C, "e": 0o33, "f": 0o14, "n": 0o12, "r": 0o15,
                 "t": 0o11, "v": 0o13}  # fmt: skip
        if c in plain:
            self.set(_PLAIN, plain[c])
        elif c in "dsw":
            self.set(_CCLASSS, _CLASS_INDEX[_ESCAPE_CLASSES[c]])
        elif c in "DSW":
            self.set(_CCLASSC, _CLASS_INDEX[_ESCAPE_CLASSES[c.lower()]])
        elif c in "AZmMyY":
            token = {"A": _SBEGIN, "Z": _SEND, "m": "<", "M": ">", "y": _WBDRY, "Y": _NWBDRY}
            self.set(token[c])
        elif c == "c":
            if self.ateos():
                self.fail(_EESCAPE)
            self.set(_PLAIN, ord(self.p[self.now]) & 0o37)
            self.now += 1
        elif c in "uUx":
            digits = {"u": (4, 4), "U": (8, 8), "x": (1, 255)}[c]
            value = self.lexdigits(16, *digits)
            if value > CHR_MAX:
                self.fail(_EESCAPE)
            self.set(_PLAIN, value)
        elif c in "123456789":
            save = self.now
            self.now -= 1
            value = self.lexdigits(10, 1, 255)
            signed = value - (1 << 32) if value >= 1 << 31 else value  # C's (int) cast
            if self.now == save or 0 < signed <= self.nsubexp:
                self.set(_BACKREF, value)
                return
            self.now = save  # not a back-reference after all: an octal escape
            self.octal()
        elif c == "0":
            self.octal()
        else:
            # Unrecognized ASCII alphanumeric escapes are reserved (lexescape's default case).
            self.fail(_EESCAPE)

    def octal(self) -> None:
        self.now -= 1
        value = self.lexdigits(8, 1, 3)
        if value > 0xFF:  # out of range: one digit too many
            self.now -= 1
            value >>= 3
        self.set(_PLAIN, value)

    def lexdigits(self, base: int, minlen: int, maxlen: int) -> int:
        """``lexdigits``: up to ``maxlen`` digits, wrapping like C's 32-bit unsigned chr."""
        value = 0
        length = 0
        while length < maxlen and not self.ateos():
            digit = int(self.p[self.now], 16) if self.p[self.now] in _HEX else -1
            if digit < 0 or digit >= base:
                break
            self.now += 1
            value = (value * base + digit) & 0xFFFFFFFF
            length += 1
        if length < minlen:
            self.fail(_EESCAPE)
        return value

    # -- grammar
    def parse(self, stopper: str, lacon: bool) -> _Node:
        """``parse``: branches separated by ``|``, up to ``stopper`` (EOS or ``)``)."""
        branches = [self.parsebranch(stopper, lacon)]
        while self.see("|"):
            self.next()
            branches.append(self.parsebranch(stopper, lacon))
        if not self.see(stopper):
            self.fail(_EPAREN)
        return branches[0] if len(branches) == 1 else _Alt(tuple(branches))

    def parsebranch(self, stopper: str, lacon: bool) -> _Node:
        items: list[_Node] = []
        while not (self.see("|") or self.see(stopper) or self.see(_EOS)):
            items.append(self.parseqatom(lacon))
        return items[0] if len(items) == 1 else _Cat(tuple(items))

    def parseqatom(self, lacon: bool) -> _Node:
        """``parseqatom``: a constraint, or an atom and its quantifier."""
        kind = self.nexttype
        anchors: dict[str, Anchor] = {
            "^": "bol" if self.cflags & _NLANCH else "bos",
            "$": "eol" if self.cflags & _NLANCH else "eos",
            _SBEGIN: "bos",
            _SEND: "eos",
            "<": "wstart",
            ">": "wend",
            _WBDRY: "word",
            _NWBDRY: "nonword",
        }
        if kind in anchors:
            # Constraints return at once: a quantifier after one is "quantifier operand invalid".
            self.next()
            return _Anchor(anchors[kind])
        if kind == _LACON:
            self.next()
            self.enter()
            self.parse(")", True)
            self.depth -= 1
            self.next()
            self.refuse("lookahead and lookbehind constraints")
            return _EMPTY_NODE
        if kind in "*+?{":
            self.fail(_BADRPT)
        if kind == ")":
            self.fail(_EPAREN)
        number = 0
        atom: _Node
        if kind == _PLAIN:
            atom = _Set(self.onechr(self.nextvalue))
            self.next()
        elif kind == "[":
            atom = _Set(self.bracket(complemented=self.nextvalue == 0))
            self.next()
        elif kind in (_CCLASSS, _CCLASSC):
            mask = _cclass(_CLASS_NAMES[self.nextvalue], self.icase)
            atom = _Set(mask if kind == _CCLASSS else _ALL & ~mask)
            self.next()
        elif kind == ".":
            atom = _Set(_ALL & ~_NL if self.cflags & _NLSTOP else _ALL)
            self.next()
        elif kind == "(":
            if not lacon and self.nextvalue:
                self.nsubexp += 1
                number = self.nsubexp
            self.next()
            self.enter()
            body = self.parse(")", lacon)
            self.depth -= 1
            self.next()
            if number:
                self.closed.add(number)
            atom = _Group(body, number)
        elif kind == _BACKREF:
            if lacon or self.nextvalue not in self.closed:
                self.fail(_ESUBREG)
            self.refuse("back-references")
            atom = _EMPTY_NODE
            self.next()
        else:
            self.fail(_ASSERT)
        return self.quantifier(atom, number)

    def quantifier(self, atom: _Node, number: int) -> _Node:
        kind = self.nexttype
        high: int | None
        preference: Preference
        if kind in ("*", "+", "?"):
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[kind]
            preference = "longer" if self.nextvalue else "shorter"
            self.next()
        elif kind == "{":
            self.next()
            low = self.scannum()
            if self.see(","):
                self.next()
                high = self.scannum() if self.see(_DIGIT) else None
                if high is not None and low > high:
                    self.fail(_BADBR)
                preference = "longer" if self.nextvalue else "shorter"
            else:
                high = low
                preference = None  # {m} passes the operand's preference through
            if not self.see("}"):
                self.fail(_BADBR)
            self.next()
        else:
            return atom
        if low == 0 and high == 0 and number:
            self.closed.discard(number)  # {0} cancels the group: v->subs[subno] = NULL
        return _Rep(atom, low, high, preference)

    def scannum(self) -> int:
        value = 0
        while self.see(_DIGIT) and value < DUPMAX:
            value = value * 10 + self.nextvalue
            self.next()
        if self.see(_DIGIT) or value > DUPMAX:
            self.fail(_BADBR)
        return value

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Unsupported(f"parentheses nested more than {MAX_NESTING} deep")

    def onechr(self, c: int) -> int:
        return _allcases(c) if self.icase else _chr_bits(c)

    def bracket(self, *, complemented: bool) -> int:
        """``bracket`` / ``cbracket``; leaves the closing ``]`` as the current token."""
        self.next()
        positive = [0]
        complements: list[int] = []
        while not self.see("]") and not self.see(_EOS):
            self.brackpart(positive, complements)
        mask = positive[0]
        for cls in complements:
            mask |= _ALL & ~cls
        if not complemented:
            return mask
        if self.cflags & _NLSTOP:
            mask |= _NL  # cbracket: in newline-sensitive mode [^...] never matches a newline
        return _ALL & ~mask

    def brackpart(self, positive: list[int], complements: list[int]) -> None:
        """``brackpart``: one item or range of a bracket expression."""
        kind = self.nexttype
        if kind == _RANGE:
            self.fail(_ERANGE)
        if kind == _PLAIN:
            start = self.nextvalue
            self.next()
            if not self.see(_RANGE):
                positive[0] |= self.onechr(start)
                return
        elif kind == _COLLEL:
            start = self.element(self.scanplain())
        elif kind == _ECLASS:
            c = self.element(self.scanplain())
            positive[0] |= self.onechr(c)  # eclass: no equivalents but case in the C locale
            return
        elif kind == _CCLASS:
            name = self.scanplain()
            if name not in _CLASSES:
                self.fail(_ECTYPE)
            positive[0] |= _cclass(name, self.icase)
            return
        elif kind in (_CCLASSS, _CCLASSC):
            mask = _cclass(_CLASS_NAMES[self.nextvalue], self.icase)
            if kind == _CCLASSS:
                positive[0] |= mask
            else:
                complements.append(mask)
            self.next()
            return
        else:
            self.fail(_ASSERT)
        end = start
        if self.see(_RANGE):
            self.next()
            if self.nexttype in (_PLAIN, _RANGE):
                end = self.nextvalue
                self.next()
            elif self.see(_COLLEL):
                end = self.element(self.scanplain())
            else:
                self.fail(_ERANGE)
        positive[0] |= _range(start, end, self.icase)

    def scanplain(self) -> str:
        """``scanplain``: the text of ``[.x.]``, ``[=x=]`` or ``[:x:]``."""
        start = self.now
        self.next()
        end = self.now
        while self.see(_PLAIN):
            end = self.now
            self.next()
        self.next()  # the END token
        return self.p[start:end]

    def element(self, name: str) -> int:
        """``element``: a one-character name stands for itself, else the cnames table."""
        if len(name) == 1:
            return ord(name)
        if name not in _CNAMES:
            self.fail(_ECOLLATE)
        return _CNAMES[name]


_HEX: Final = frozenset("0123456789abcdefABCDEF")
_CLASS_NAMES: Final = tuple(_CLASSES)  # enum char_classes order
_CLASS_INDEX: Final = {name: index for index, name in enumerate(_CLASS_NAMES)}


def _is_alpha(c: str) -> bool:
    """``iscalpha`` under the C collation."""
    return c.isascii() and c.isalpha()


def _is_space(c: str) -> bool:
    """``iscspace`` under the C collation: tab, newline, vertical tab, form feed, CR, space."""
    return c in "\t\n\v\f\r "


def _option(cflags: int, letter: str) -> int:
    """One embedded-option letter (``prefixes``)."""
    changes = {  # letter: (flags set, flags cleared)
        "b": (0, _ADVANCED | _QUOTE),
        "c": (0, _ICASE),
        "e": (_EXTENDED, _ADVF | _QUOTE),
        "i": (_ICASE, 0),
        "m": (_NEWLINE, 0),
        "n": (_NEWLINE, 0),
        "p": (_NLSTOP, _NLANCH),
        "q": (_QUOTE, _ADVANCED),
        "s": (0, _NEWLINE),
        "t": (0, _EXPANDED),
        "w": (_NLANCH, _NLSTOP),
        "x": (_EXPANDED, 0),
    }
    if letter not in changes:
        raise _PgError(_BADOPT)
    added, removed = changes[letter]
    return (cflags | added) & ~removed


# --- tree facts ----------------------------------------------------------------------------------
_Edge = tuple[int, bool]  # (bytes that may be consumed first/last, may consume nothing)
_UNKNOWN: Final[_Edge] = (0, True)


def _first(node: _Node) -> _Edge:
    """The bytes the node's first character may be, and whether it may match the empty string."""
    return _edge(node, reverse=False)


def _last(node: _Node) -> _Edge:
    return _edge(node, reverse=True)


def _edge(node: _Node, *, reverse: bool) -> _Edge:
    if isinstance(node, _Set):
        return node.mask, False
    if isinstance(node, _Anchor):
        return 0, True
    if isinstance(node, _Group):
        return _edge(node.body, reverse=reverse)
    if isinstance(node, _Rep):
        if node.high == 0:
            return 0, True
        mask, nullable = _edge(node.body, reverse=reverse)
        return mask, nullable or node.low == 0
    if isinstance(node, _Alt):
        edges = [_edge(branch, reverse=reverse) for branch in node.branches]
        return reduce(operator.or_, (mask for mask, _ in edges), 0), any(n for _, n in edges)
    items = reversed(node.items) if reverse else node.items
    return _then((_edge(item, reverse=reverse) for item in items), _UNKNOWN, empty_is_end=True)


def _then(edges: Iterable[_Edge], outer: _Edge, *, empty_is_end: bool = False) -> _Edge:
    """The edge of a sequence of parts, then ``outer`` once all of them may be empty."""
    total = 0
    for mask, nullable in edges:
        total |= mask
        if not nullable:
            return total, False
    if empty_is_end:
        return total, True
    return total | outer[0], outer[1]


def _walk(node: _Node) -> Iterator[_Node]:
    yield node
    if isinstance(node, (_Group, _Rep)):
        yield from _walk(node.body)
    elif isinstance(node, (_Cat, _Alt)):
        for child in node.branches if isinstance(node, _Alt) else node.items:
            yield from _walk(child)


# --- writing RE2 syntax --------------------------------------------------------------------------
def _class(mask: int) -> str:
    """A set of bytes as an RE2 class of ``\\xHH`` escapes (Latin-1 mode: one byte each)."""
    if mask == 0:
        return r"[^\x00-\xff]"  # an empty set: never matches
    if mask & (mask - 1) == 0:  # one byte: itself when alphanumeric (no meaning to RE2)
        byte = mask.bit_length() - 1
        return chr(byte) if _ALNUMS >> byte & 1 else f"\\x{byte:02x}"
    spans: list[str] = []
    byte = 0
    while byte < 256:
        if not mask >> byte & 1:
            byte += 1
            continue
        end = byte
        while end < 255 and mask >> (end + 1) & 1:
            end += 1
        spans.append(f"\\x{byte:02x}" if end == byte else f"\\x{byte:02x}-\\x{end:02x}")
        byte = end + 1
    return "[" + "".join(spans) + "]"


_ANCHORS_RE2: Final = {"bos": r"\A", "eos": r"\z", "bol": "(?m:^)", "eol": "(?m:$)",
                       "word": r"\b", "nonword": r"\B"}  # fmt: skip


def _emit(node: _Node, before: _Edge, after: _Edge) -> str:
    """RE2 syntax for ``node``; ``before``/``after`` describe its neighbours (for \\m, \\M)."""
    if isinstance(node, _Set):
        return _class(node.mask)
    if isinstance(node, _Anchor):
        return _emit_anchor(node.kind, before, after)
    if isinstance(node, _Group):
        return "(?:" + _emit(node.body, before, after) + ")"
    if isinstance(node, _Alt):
        return "(?:" + "|".join(_emit(b, before, after) for b in node.branches) + ")"
    if isinstance(node, _Rep):
        if node.high == 0:
            return ""
        # Inside a loop a neighbour may be another iteration: no context is known.
        body = _emit(node.body, _UNKNOWN, _UNKNOWN)
        if not isinstance(node.body, (_Set, _Group)):
            body = f"(?:{body})"
        low, high = node.low, node.high
        suffix = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((low, high))
        if suffix is None:
            suffix = f"{{{low}}}" if low == high else f"{{{low},{'' if high is None else high}}}"
        # Greediness never changes *whether* a match exists; captures are computed separately.
        return body + suffix
    return _emit_items(node.items, before, after, 0, len(node.items))


def _emit_items(
    items: tuple[_Node, ...], before: _Edge, after: _Edge, start: int, stop: int
) -> str:
    """RE2 syntax for ``items[start:stop]``, each item seeing all of its real neighbours."""
    contexts = _contexts(items, before, after)
    return "".join(_emit(items[i], *contexts[i]) for i in range(start, stop))


def _contexts(items: tuple[_Node, ...], before: _Edge, after: _Edge) -> list[tuple[_Edge, _Edge]]:
    """For each item: what may come just before it and just after it."""
    lefts: list[_Edge] = []
    edge = before
    for item in items:
        lefts.append(edge)
        edge = _then((_last(item),), edge)
    rights: list[_Edge] = []
    edge = after
    for item in reversed(items):
        rights.append(edge)
        edge = _then((_first(item),), edge)
    rights.reverse()
    return list(zip(lefts, rights, strict=True))


def _emit_anchor(kind: Anchor, before: _Edge, after: _Edge) -> str:
    """``\\m`` and ``\\M`` are RE2's ``\\b`` where one side of the boundary is known.

    PostgreSQL: ``\\m`` is non-word-or-start behind and a word character ahead (``parseqatom``,
    case ``<``); ``\\b`` is "word on exactly one side". When the character ahead is certainly a
    word character, or the one behind certainly is not, the two are the same; likewise for
    ``\\M``. RE2 has no lookaround to say more.
    """
    if kind not in ("wstart", "wend"):
        return _ANCHORS_RE2[kind]
    word_ahead = not after[1] and after[0] & ~_WORD == 0
    nonword_ahead = not after[1] and after[0] & _WORD == 0
    word_behind = not before[1] and before[0] & ~_WORD == 0
    nonword_behind = not before[1] and before[0] & _WORD == 0
    if (word_ahead or nonword_behind) if kind == "wstart" else (word_behind or nonword_ahead):
        return r"\b"
    which = r"\m or [[:<:]]" if kind == "wstart" else r"\M or [[:>:]]"
    raise _Unsupported(
        f"{which} next to characters that may or may not be word characters "
        "(RE2 has no lookaround; it is supported where the character after \\m, or before \\M, "
        "is certainly a word character)"
    )


# --- compiled expressions ------------------------------------------------------------------------
_RE2 = Any  # re2._Regexp: google-re2 ships no type information


def _re2(translation: str) -> _RE2:
    """RE2 over bytes (Latin-1 mode: one byte, one character), leftmost-longest."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.longest_match = True
    options.log_errors = False
    try:
        return re2.compile(translation.encode("ascii"), options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        text = detail.decode("latin-1") if isinstance(detail, bytes) else str(detail)
        raise RegexRefused(f"{_NOT_SUPPORTED}too large for RE2 ({text})") from None


@dataclass(frozen=True, slots=True)
class _Step:
    """One concatenation on the way down to group 1, split twice as ``ccondissect`` does.

    ``before``/``rest`` split the concatenation's span at the start of the item that holds
    group 1; ``item``/``after`` split the rest at its end. None stands for no items at all.
    """

    before: _RE2 | None
    rest: _RE2 | None
    item: _RE2 | None
    after: _RE2 | None


CaptureKind = Literal["group", "optional", "never"]


@dataclass(frozen=True, slots=True)
class _CapturePlan:
    """How to find group 1: the steps down to it, then what it is (``never``: never set)."""

    steps: tuple[_Step, ...]
    kind: CaptureKind


def _group1(node: _Node) -> bool:
    return any(isinstance(n, _Group) and n.number == 1 for n in _walk(node))


def _capture_plan(tree: _Node, groups: int) -> _CapturePlan:
    """The steps to PostgreSQL's group 1, or _Unsupported saying why it cannot be had exactly.

    ``regexec.c``: with no non-greedy quantifier the RE is greedy, ``find`` picks the leftmost
    then longest match, and ``cdissect`` splits each concatenation with ``ccondissect``: the
    longest left part for which the right part still matches. A capturing group with ``?``
    is an iteration node (``citerdissect``): set when it matched a non-empty string.
    """
    if groups == 0:
        return _CapturePlan((), "never")
    if any(isinstance(n, _Rep) and n.preference == "shorter" for n in _walk(tree)):
        raise _Unsupported("\\1 of an expression with non-greedy quantifiers")
    steps: list[_Step] = []
    node, before, after = tree, _UNKNOWN, _UNKNOWN
    while True:
        if isinstance(node, _Alt):
            raise _Unsupported("\\1 of a group inside an alternation (|)")
        items = node.items if isinstance(node, _Cat) else (node,)
        index = next(i for i, item in enumerate(items) if _group1(item))
        item = items[index]
        steps.append(_step(items, index, before, after))
        before, after = _contexts(items, before, after)[index]
        while isinstance(item, _Rep) and item.low == item.high == 1:
            item = item.body  # (x){1} and (x){1,1} are x, for captures too
        if isinstance(item, _Rep):
            if item.high == 0:
                return _CapturePlan((), "never")  # {0} deletes the atom, group included
            body = item.body
            if (item.low, item.high) == (0, 1) and isinstance(body, _Group) and body.number == 1:
                if _first(body)[1]:
                    # PostgreSQL 14 changed whether an empty iteration sets the group.
                    raise _Unsupported("\\1 of (...)? whose group can match the empty string")
                return _CapturePlan(tuple(steps), "optional")
            raise _Unsupported("\\1 of a repeated group")
        assert isinstance(item, _Group), item  # the only other nodes that can hold group 1
        if item.number == 1:
            return _CapturePlan(tuple(steps), "group")
        node = item.body


def _step(items: tuple[_Node, ...], index: int, before: _Edge, after: _Edge) -> _Step:
    def part(start: int, stop: int) -> _RE2 | None:
        if start == stop:
            return None
        return _re2(_emit_items(items, before, after, start, stop))

    end = len(items)
    return _Step(part(0, index), part(index, end), part(index, index + 1), part(index + 1, end))


def _spans(regex: _RE2 | None, text: bytes, start: int, end: int) -> bool:
    """Does ``regex`` match exactly text[start:end]? The bytes around count as context."""
    if regex is None:
        return start == end
    return regex.fullmatch(text, start, end) is not None


def _longest(regex: _RE2 | None, text: bytes, start: int, limit: int) -> int | None:
    """``rege_dfa.c:longest``: the end of the longest match starting at ``start`` and ending by
    ``limit`` (RE2 anchored at the start, leftmost-longest), or None."""
    if regex is None:
        return start
    match = regex.match(text, start, limit)
    return None if match is None else int(match.end())


def _longest_split(left: _RE2 | None, right: _RE2 | None, text: bytes, start: int, end: int) -> int:
    """``ccondissect``: the latest midpoint with left matching before it and right after it."""
    limit = end
    while (mid := _longest(left, text, start, limit)) is not None:
        if _spans(right, text, mid, end):
            return mid
        if mid == start:
            break
        limit = mid - 1
    raise RuntimeError("regex dissection failed on a span RE2 matched")  # a bug, not input


@dataclass(frozen=True, slots=True, eq=False)
class PgRegex:
    """A compiled pg_hba.conf / pg_ident.conf regular expression.

    ``pattern`` is the ARE as written (after the ``/``), ``translation`` the RE2 syntax it
    became, ``groups`` PostgreSQL's ``re_nsub``.
    """

    pattern: str
    translation: str
    groups: int
    compiled: _RE2 = field(repr=False)
    capture_plan: _CapturePlan | None = field(repr=False)

    def search(self, subject: str) -> bool:
        """``regexec_auth_token(subject, token, 0, NULL) == REG_OKAY``: an unanchored search."""
        return self.compiled.search(wire_bytes(subject)) is not None

    def first_group(self, subject: str) -> tuple[bool, bytes | None]:
        """(matched, the bytes of capture group 1 or None when it is not set).

        ``regexec_auth_token(subject, token, 2, matches)``; only for expressions compiled with
        ``captures=True``.
        """
        plan = self.capture_plan
        if plan is None:
            raise ValueError(f'"{self.pattern}" was compiled without captures')
        text = wire_bytes(subject)
        match = self.compiled.search(text)
        if match is None:
            return False, None
        if plan.kind == "never":
            return True, None
        start, end = match.start(), match.end()
        for step in plan.steps:
            start = _longest_split(step.before, step.rest, text, start, end)
            end = _longest_split(step.item, step.after, text, start, end)
        if plan.kind == "optional" and start == end:
            return True, None
        return True, text[start:end]


def _looping_anchor(node: _Node, looping: bool = False) -> bool:
    """Is a constraint inside an unbounded quantifier? PostgreSQL breaks constraint loops by
    cloning states (``regc_nfa.c:fixconstraintloops``), which can make small patterns too
    complex (e.g. ``(?:\\Z|(?:[ab]*(?:\\y(?:a*b+)?)?){0,3})*``)."""
    if isinstance(node, _Anchor):
        return looping
    if isinstance(node, _Set):
        return False
    if isinstance(node, (_Group, _Rep)):
        inner = looping or (isinstance(node, _Rep) and node.high is None)
        return _looping_anchor(node.body, inner)
    children = node.branches if isinstance(node, _Alt) else node.items
    return any(_looping_anchor(child, looping) for child in children)


def _expanded(node: _Node, leaf: Callable[[_Set | _Anchor], bool]) -> int:
    """Leaves counted by ``leaf`` once quantifiers are expanded, as PostgreSQL's ``repeat``
    copies the sub-NFA (an unbounded loop is one copy, or ``low`` copies)."""
    if isinstance(node, (_Set, _Anchor)):
        return int(leaf(node))
    if isinstance(node, _Group):
        return _expanded(node.body, leaf)
    if isinstance(node, _Rep):
        copies = node.high if node.high is not None else max(node.low, 1)
        return _expanded(node.body, leaf) * copies
    children = node.branches if isinstance(node, _Alt) else node.items
    return sum(_expanded(child, leaf) for child in children)


def compile_regex(pattern: str, *, captures: bool = False) -> PgRegex:
    """Compile the ARE ``pattern`` as ``regcomp_auth_token`` would, for RE2.

    ``captures``: the caller will ask for group 1 (an ident line substituting ``\\1``); refuse
    what pggate cannot dissect exactly. Raises :class:`RegexRefused`.
    """
    try:
        raw = wire_bytes(pattern)
    except UnicodeEncodeError:
        raise RegexRefused(f"{_NOT_SUPPORTED}characters that are not bytes") from None
    parser = _Parser(raw.decode("latin-1"))
    try:
        parser.start()
        tree = parser.parse(_EOS, False)
        if parser.unsupported is not None:
            raise _Unsupported(parser.unsupported)
        if _expanded(tree, lambda _: True) > MAX_ATOMS:
            raise _Unsupported(
                f"more than {MAX_ATOMS} atoms once quantifiers are expanded "
                "(PostgreSQL's own limit for a too complex expression is not much higher)"
            )
        constraints = _expanded(
            tree, lambda n: isinstance(n, _Anchor) and n.kind in _CONTEXT_ANCHORS
        )
        if constraints > MAX_CONTEXT_CONSTRAINTS:
            raise _Unsupported(
                f"more than {MAX_CONTEXT_CONSTRAINTS} word-boundary or newline constraints "
                "(each can double PostgreSQL's NFA, which then is too complex)"
            )
        if _looping_anchor(tree):
            raise _Unsupported(
                "a constraint (^ $ \\A \\Z \\y \\Y \\m \\M) inside *, + or {m,} "
                "(PostgreSQL's handling of constraint loops may find it too complex)"
            )
        translation = _emit(tree, _UNKNOWN, _UNKNOWN)
        compiled = _re2(translation)
        plan = _capture_plan(tree, parser.nsubexp) if captures else None
    except _PgError as exc:
        raise RegexRefused(str(exc)) from None
    except _Unsupported as exc:
        raise RegexRefused(f"{_NOT_SUPPORTED}{exc}") from None
    return PgRegex(pattern, translation, parser.nsubexp, compiled, plan)
