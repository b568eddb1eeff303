"""The embedded PostgreSQL cluster: without ``--backend``, pggate runs a private cluster in
``DIR/pgdata``.

It listens on no TCP port, only on a Unix socket in a 0700 directory inside DIR, with ``trust``
there: the gateway is its only door. PostgreSQL refuses to run as root, so when pggate is root
the cluster runs as an unprivileged system user (``postgres``, else a ``pggate`` user created on
demand), and every file it needs (data directory, socket directory, log, binaries) must be
reachable by that user.

- ``users.py``: the unprivileged identity the cluster runs as, and running as it.
- ``binaries.py``: finding a PostgreSQL server (13 or newer) and its version.
- ``reach.py``: whether that identity can reach a path; the binary cache when it cannot.
- ``processes.py``: lock-file PIDs, process liveness and signals.
- ``cluster.py``: ``EmbeddedCluster``: initdb, start, stop, health.
- ``watchdog.py``: ``ClusterWatchdog``: restarts a cluster whose postmaster died, and tells
  every worker meanwhile (their clients get 57P03).

Each module imports only modules listed above it, never this ``__init__``; the names below are
the package's interface.
"""

from __future__ import annotations

from pggate.embedded.binaries import MIN_SERVER_VERSION, find_postgres_bindir
from pggate.embedded.cluster import EmbeddedCluster
from pggate.embedded.reach import DEFAULT_BINARY_CACHE, bindir_for_user, require_reachable
from pggate.embedded.users import run_as_user
from pggate.embedded.watchdog import ClusterWatchdog

__all__ = [
    "DEFAULT_BINARY_CACHE",
    "MIN_SERVER_VERSION",
    "ClusterWatchdog",
    "EmbeddedCluster",
    "bindir_for_user",
    "find_postgres_bindir",
    "require_reachable",
    "run_as_user",
]
