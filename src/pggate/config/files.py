"""The one door to the filesystem for configuration files.

config/ reads pggate.conf through it, and hba/ (which is sans-IO and must not open files itself)
receives an instance to read pg_hba.conf / pg_ident.conf and their includes. Anything with these
two methods will do, so tests hand in an in-memory dictionary instead of a directory.
"""

from __future__ import annotations

import os

from pggate.pgtext import FileSource

__all__ = ["DiskFiles", "FileSource"]


class DiskFiles:
    """The real filesystem. Errors (OSError and its subclasses) propagate unchanged."""

    def read_text(self, path: str) -> str:
        # PostgreSQL reads bytes: undecodable bytes must survive (surrogateescape), and a lone
        # CR is whitespace to its lexer, not a line break, so no newline translation either.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)
