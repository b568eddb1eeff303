"""Where auth-file text comes from, and how PostgreSQL resolves the names it is given.

hba/ never touches the filesystem itself (design.md, layering): the caller injects an object
with ``read_text`` and ``list_dir``. Path arithmetic is pure ``posixpath`` string work, done the
way PostgreSQL's ``conffiles.c:AbsoluteConfigLocation`` does it.
"""

from __future__ import annotations

import posixpath
from typing import Protocol


class SourceFiles(Protocol):
    """Read access to configuration files, injected by the I/O shell."""

    def read_text(self, path: str) -> str:
        """The whole file as text; raises FileNotFoundError / OSError."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) of the non-directory entries of a directory; raises OSError."""
        ...


def absolute_location(location: str, calling_file: str) -> str:
    """``location`` as PostgreSQL resolves it: absolute as-is, else beside ``calling_file``."""
    if posixpath.isabs(location):
        return location
    parent = posixpath.dirname(calling_file)
    return posixpath.normpath(posixpath.join(parent, location))


def os_error_text(exc: OSError) -> str:
    """What ``%m`` prints for this error (strerror), without the errno number or path."""
    if exc.strerror:
        return exc.strerror
    if isinstance(exc, FileNotFoundError):
        return "No such file or directory"
    if isinstance(exc, PermissionError):
        return "Permission denied"
    return str(exc) or type(exc).__name__
