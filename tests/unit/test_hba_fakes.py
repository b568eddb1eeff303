"""A dict-backed ``FileSource`` for the hba/ident tests (no test functions here)."""

from __future__ import annotations

import errno
import posixpath


class FakeFiles:
    """Files by absolute path; directories are implied by the paths of their files."""

    def __init__(self, files: dict[str, str], *, empty_dirs: tuple[str, ...] = ()) -> None:
        self.files = dict(files)
        self.empty_dirs = set(empty_dirs)
        self.reads: list[str] = []

    def read_text(self, path: str) -> str:
        self.reads.append(path)
        if path in self.files:
            return self.files[path]
        if self._is_dir(path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    def list_dir(self, path: str) -> list[str]:
        if not self._is_dir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return sorted(
            {p[len(path) + 1 :] for p in self.files if posixpath.dirname(p) == path},
            reverse=True,  # the loader must sort, not the directory listing
        )

    def _is_dir(self, path: str) -> bool:
        return path in self.empty_dirs or any(p.startswith(path + "/") for p in self.files)
