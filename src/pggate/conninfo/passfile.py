"""Reading the password file: the only I/O of the conninfo package.

libpq (passwordFromFile) silently skips a password file it cannot open, and skips with a
WARNING on stderr one that is not a plain file or that has group or world access. pggate
refuses the last two with an error naming the file instead (fail closed: a password readable by
others is a problem to fix, not a warning to scroll past), and refuses a file that exists but
cannot be read. A missing file is no password, as in libpq.

The default file is ``~/.pgpass`` of the user pggate runs as ($HOME, else the password
database), as libpq's pqGetHomeDirectory. pggate reads no environment variable for the
conninfo: PGPASSFILE, like PGHOST and the rest, has no effect; write ``passfile=``.
"""

from __future__ import annotations

import os
import pwd
import stat

from pggate.conninfo.parse import refuse
from pggate.conninfo.pgpass import PgpassEntry, parse_pgpass

PGPASSFILE = ".pgpass"


def default_passfile() -> str | None:
    """``~/.pgpass`` of the running user, or None when there is no home directory."""
    home = os.environ.get("HOME")
    if not home:
        try:
            home = pwd.getpwuid(os.geteuid()).pw_dir
        except KeyError:
            return None
    return f"{home}/{PGPASSFILE}" if home else None


def read_pgpass(path: str) -> tuple[PgpassEntry, ...]:
    """The usable lines of the password file at ``path``; () when it does not exist.

    Raises ConfigError (never quoting the file's content) when the file is not a plain file,
    has any group or world permission bit, cannot be read, or is not UTF-8.
    """
    try:
        # O_NONBLOCK: a FIFO must not hang the reload; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise refuse(f'could not open password file "{path}": {exc.strerror}') from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(f'password file "{path}" is not a plain file')
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise refuse(
                f'password file "{path}" has group or world access; '
                "permissions should be u=rw (0600) or less",
                hint=f"chmod 0600 {path}",
            )
        with open(fd, "rb", closefd=False) as file:
            data = file.read()
    except OSError as exc:
        raise refuse(f'could not read password file "{path}": {exc.strerror}') from None
    finally:
        os.close(fd)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise refuse(f'password file "{path}" is not valid UTF-8') from None
    return parse_pgpass(text)
