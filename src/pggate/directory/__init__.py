"""The gateway directory on disk: the contract between the pggate processes that share one.

``pggate init`` writes a directory, ``serve`` and ``check`` read it, ``status|reload|stop`` find
its server through it; a directory written by hand is as valid (README.md).

- ``layout.py``: the names of its files, in one place (imports nothing).
- ``pidfile.py``: ``DIR/pggate.pid`` (which process serves the directory, under an ``flock``)
  and ``DIR/pggate.reload.N`` (what each serving process's last reload did).

This package is a ground floor: it imports nothing of pggate but ``errors``, so that the
configuration, TLS, the embedded cluster and the server can all name the directory's files.
Creating and checking a directory (``initdir.py``) is a command that drives all of those, so it
lives above them, outside this package.
"""
