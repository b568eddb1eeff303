"""SANS-IO pg_hba.conf / pg_ident.conf: tokenizer, validated rules with (file, line),
pure first-match evaluation and user-name maps, as PostgreSQL 16+ (18) defines them.

No file, socket, clock or DNS access here: files come through ``pgtext.FileSource``; host names,
role membership and local interfaces come precomputed in ``ConnectionFacts``.
"""

from pggate.hba.address import AddressKind, AddressSpec
from pggate.hba.ident import IdentLine, IdentMaps, load_ident
from pggate.hba.match import ConnectionFacts, rejection_message
from pggate.hba.methods import AuthMethod, ConnType
from pggate.hba.rule import HbaRule
from pggate.hba.rules import HbaPolicy, load_hba, parse_hba_line
from pggate.hba.tokens import AuthFileError, AuthLine, AuthToken, tokenize_auth_file

__all__ = [
    "AddressKind",
    "AddressSpec",
    "AuthFileError",
    "AuthLine",
    "AuthMethod",
    "AuthToken",
    "ConnType",
    "ConnectionFacts",
    "HbaPolicy",
    "HbaRule",
    "IdentLine",
    "IdentMaps",
    "load_hba",
    "load_ident",
    "parse_hba_line",
    "rejection_message",
    "tokenize_auth_file",
]
