"""pggate's own cancel keys: what clients get in BackendKeyData, mapped to the backend's.

Clients must cancel through pggate (the backend is not reachable to them), and a key that pggate
invents cannot be used to cancel another client's backend query. The low bits of each PID name
the worker process that owns the session (workers.py), so any worker can route a cancel.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass, field

from pggate.conninfo import BackendAddress
from pggate.hop.route import Route
from pggate.server import workers

log = logging.getLogger("pggate.gateway")


@dataclass(frozen=True, slots=True)
class CancelTarget:
    key: bytes
    backend_pid: int
    backend_key: bytes
    backend: BackendAddress  # the host the session runs on
    route: Route  # how it was reached (TLS settings), as of the session's snapshot


@dataclass(slots=True)
class CancelKeys:
    """pggate's own (pid, key) pairs handed to clients, mapped to the backend's.

    Clients must cancel through pggate (the backend is not reachable to them), and a key that
    pggate invents cannot be used to cancel another client's backend query.
    """

    worker: int = 0
    targets: dict[int, CancelTarget] = field(default_factory=dict)

    def register(
        self,
        key_length: int,
        backend_pid: int,
        backend_key: bytes,
        backend: BackendAddress,
        route: Route,
    ) -> tuple[int, bytes]:
        # The low bits name the worker process that owns the session (see workers.py).
        random_bits = 31 - workers.WORKER_BITS
        while True:
            pid = (secrets.randbelow(2**random_bits - 1) + 1) << workers.WORKER_BITS
            pid |= self.worker
            if pid not in self.targets:
                break
        key = secrets.token_bytes(key_length)
        self.targets[pid] = CancelTarget(key, backend_pid, backend_key, backend, route)
        return pid, key

    def match(self, pid: int, key: bytes) -> CancelTarget | None:
        target = self.targets.get(pid)
        if target is None:
            log.info("PID %d in cancel request did not match any process", pid)
            return None
        if len(key) != len(target.key) or not hmac.compare_digest(key, target.key):
            log.info("wrong key in cancel request for process %d", pid)
            return None
        return target

    def forget(self, pid: int) -> None:
        self.targets.pop(pid, None)
