"""The frozen result of loading a configuration: one attribute per setting.

The attributes are spelled out (rather than generated from the table) so that mypy checks every
use in the server; a unit test keeps them in step with the settings table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Config:
    """Validated settings of one gateway directory. Paths stay as written; see path()."""

    directory: Path
    authentication_timeout: int  # seconds
    backend: str
    backend_krb_client_keyfile: str
    backend_scram_max_iterations: int
    gss_accept_delegation: bool
    hba_file: str
    ident_file: str
    krb_caseins_users: bool
    krb_server_keyfile: str
    listen_addresses: str
    log_connections: frozenset[str]
    log_destination: frozenset[str]
    log_disconnections: bool
    log_file: str  # '' = standard error
    log_hostname: bool
    log_line_prefix: str
    log_timezone: str  # an IANA zone name, checked when loaded
    max_connections: int
    max_startup_connections: int
    password_encryption: str
    pool_mode: str
    pool_size: int
    port: int
    postgres_bindir: str
    scram_iterations: int
    server_idle_timeout: int  # seconds
    server_lifetime: int  # seconds
    server_reset_query: str
    ssl: bool
    ssl_ca_file: str
    ssl_cert_file: str
    ssl_ciphers: str
    ssl_crl_dir: str
    ssl_crl_file: str
    ssl_dh_params_file: str
    ssl_groups: str
    ssl_key_file: str
    ssl_max_protocol_version: str
    ssl_min_protocol_version: str
    ssl_passphrase_command: str
    ssl_passphrase_command_supports_reload: bool
    ssl_prefer_server_ciphers: bool
    ssl_tls13_ciphers: str
    syslog_facility: str  # local0 .. local7
    syslog_ident: str
    syslog_sequence_numbers: bool
    syslog_split_messages: bool
    tcp_socket_buffer: int  # bytes; 0: the kernel's autotuning
    trace_connection_negotiation: bool
    workers: int
    # Names set in a file or with -c (not left at their defaults), for settings whose default
    # defers to the backend (scram_iterations).
    explicitly_set: frozenset[str] = frozenset()

    def path(self, value: str) -> Path:
        """A file setting's path: relative ones are relative to the gateway directory.

        An empty value means "not configured" for most file settings; ask before calling.
        """
        if not value:
            raise ValueError("an empty path setting names no file")
        return self.directory / value
