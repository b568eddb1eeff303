"""Who the embedded cluster runs as, and running as them.

PostgreSQL refuses to run as root, so when pggate is root the cluster runs as an unprivileged
system user: ``postgres``, else a ``pggate`` user created on demand (``run_as_user``). This
module owns that choice and the ``Identity`` it resolves to, and what doing things as it takes:
the credentials and the clean environment of its child processes, and handing it the files and
directories pggate creates for it. Whether it can *reach* a path is ``reach.py``'s question.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pggate.errors import PggateError

log = logging.getLogger("pggate.embedded")

#: The unprivileged user created when root runs pggate and no ``postgres`` user exists.
FALLBACK_USER = "pggate"
#: How long a short helper command (``postgres --version``, ``pg_config``, ``useradd``) may take.
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Identity:
    """An OS user the cluster's processes run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def lookup(cls, name: str) -> Identity:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise PggateError(f"no such user: {name!r}") from None
        groups = tuple(os.getgrouplist(name, pw.pw_gid))
        return cls(name, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir)


def _switching(user: Identity | None) -> bool:
    """Whether child processes must change identity to run as ``user``."""
    return user is not None and os.geteuid() == 0 and user.uid != 0


class _IdentityKwargs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def identity_kwargs(user: Identity | None) -> _IdentityKwargs:
    """Popen arguments that drop root to ``user``, including supplementary groups."""
    if user is None or not _switching(user):
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def child_env(user: Identity | None) -> dict[str, str]:
    """A clean environment: no PG* variables leaking in, C messages, the user's HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if user is not None and _switching(user):
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    return env


def chown_to_user(target: int | Path, user: Identity | None) -> None:
    """Give a file or directory pggate just made for the cluster (a descriptor or a path) to
    ``user``, when the cluster's processes run as that user rather than as us."""
    if user is not None and _switching(user):
        os.chown(target, user.uid, user.gid)


def run_as_user() -> str | None:
    """The user the embedded cluster runs as: None (the current user) unless we are root.

    As root: ``postgres`` if it exists, else ``pggate`` (created as a system user if needed),
    because PostgreSQL refuses to run as root.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        if _user_exists(name):
            break
    else:
        name = FALLBACK_USER
        _create_system_user(name)
    log.info(
        "running as root: the embedded PostgreSQL cluster runs as the unprivileged user %r "
        "because PostgreSQL refuses to run as root",
        name,
    )
    return name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_system_user(name: str) -> None:
    """Create a login-less system user (useradd, else Debian's adduser)."""
    if shutil.which("useradd"):
        cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
        cmd += ["--shell", "/usr/sbin/nologin", name]
    elif shutil.which("adduser"):
        cmd = ["adduser", "--system", "--group", "--no-create-home"]
        cmd += ["--shell", "/usr/sbin/nologin", name]
    else:
        raise PggateError(
            f"PostgreSQL cannot run as root and there is no 'postgres' user; create a system "
            f"user {name!r} (neither useradd nor adduser is available)"
        )
    log.info("creating system user %r for the embedded PostgreSQL cluster", name)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    # A concurrent pggate may have created it first: only its absence afterwards is an error.
    if proc.returncode != 0 and not _user_exists(name):
        raise PggateError(f"cannot create system user {name!r}: {proc.stderr.strip()}")
