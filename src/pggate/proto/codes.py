"""Every protocol number and SQLSTATE pggate uses, named once.

Sources: PostgreSQL ``src/include/libpq/pqcomm.h``, ``protocol.h`` and ``errcodes.txt``;
see ``shared/protocol.md`` for the facts behind each value.
"""

from __future__ import annotations

from typing import Final


def protocol_version(major: int, minor: int) -> int:
    """PG_PROTOCOL(major, minor) of pqcomm.h."""
    return (major << 16) | minor


PROTOCOL_3_0 = protocol_version(3, 0)
PROTOCOL_3_2 = protocol_version(3, 2)
PROTOCOL_EARLIEST = PROTOCOL_3_0
PROTOCOL_LATEST = PROTOCOL_3_2

CANCEL_REQUEST_CODE = protocol_version(1234, 5678)
NEGOTIATE_SSL_CODE = protocol_version(1234, 5679)
NEGOTIATE_GSS_CODE = protocol_version(1234, 5680)

# Bytes of a startup-phase packet after its 4-byte length word (pqcomm.h).
MAX_STARTUP_PACKET_LENGTH = 10000
# Cancel keys: PG18 accepts 1..256 bytes; 4 bytes for protocol < 3.2, 32 for 3.2.
MAX_CANCEL_KEY_LENGTH = 256
CANCEL_KEY_LENGTH_3_0 = 4
CANCEL_KEY_LENGTH_3_2 = 32
NAMEDATALEN = 64
# Largest authentication response body (auth.h PG_MAX_AUTH_TOKEN_LENGTH).
MAX_AUTH_TOKEN_LENGTH = 65535
# Largest SASL message (auth-sasl.c PG_MAX_SASL_MESSAGE_LENGTH).
MAX_SASL_MESSAGE_LENGTH = 1024

# The first byte of a TLS handshake record: a direct-TLS ClientHello (PG17+).
TLS_HANDSHAKE_RECORD = 0x16
ALPN_POSTGRESQL = "postgresql"

# One-byte answers to SSLRequest / GSSENCRequest.
SSL_ACCEPT = b"S"
GSS_ACCEPT = b"G"
ENCRYPTION_REFUSE = b"N"

# Backend message types (server -> client).
MSG_AUTHENTICATION = b"R"
MSG_BACKEND_KEY_DATA = b"K"
MSG_ERROR_RESPONSE = b"E"
MSG_NOTICE_RESPONSE = b"N"
MSG_NEGOTIATE_PROTOCOL_VERSION = b"v"
MSG_PARAMETER_STATUS = b"S"
MSG_READY_FOR_QUERY = b"Z"
# ReadyForQuery is always 6 bytes: type, Int32 length 5, transaction status.
READY_FOR_QUERY_SIZE = 6

# Frontend message types (client -> server).
MSG_PASSWORD = b"p"  # also GSSResponse, SASLInitialResponse, SASLResponse
MSG_TERMINATE = b"X"

# Authentication request codes (the Int32 after 'R').
AUTH_OK = 0
AUTH_CLEARTEXT_PASSWORD = 3
AUTH_MD5_PASSWORD = 5
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# ErrorResponse / NoticeResponse field codes.
FIELD_SEVERITY = b"S"
FIELD_SEVERITY_NONLOCALIZED = b"V"
FIELD_SQLSTATE = b"C"
FIELD_MESSAGE = b"M"
FIELD_DETAIL = b"D"
FIELD_HINT = b"H"

SEVERITY_FATAL = "FATAL"
SEVERITY_ERROR = "ERROR"

# SQLSTATEs (errcodes.txt).
SQLSTATE_CONNECTION_FAILURE = "08006"
SQLSTATE_CONNECTION_EXCEPTION = "08000"
SQLSTATE_PROTOCOL_VIOLATION = "08P01"
SQLSTATE_FEATURE_NOT_SUPPORTED = "0A000"
SQLSTATE_INVALID_AUTHORIZATION = "28000"
SQLSTATE_INVALID_PASSWORD = "28P01"
SQLSTATE_TOO_MANY_CONNECTIONS = "53300"
SQLSTATE_CANNOT_CONNECT_NOW = "57P03"
SQLSTATE_ADMIN_SHUTDOWN = "57P01"
SQLSTATE_CONFIG_FILE_ERROR = "F0000"
SQLSTATE_INTERNAL_ERROR = "XX000"


# --- startup-phase wire layer (proto/codec.py, proto/negotiate.py) ---


def protocol_major(version: int) -> int:
    """PG_PROTOCOL_MAJOR of pqcomm.h."""
    return version >> 16


def protocol_minor(version: int) -> int:
    """PG_PROTOCOL_MINOR of pqcomm.h."""
    return version & 0xFFFF


# Protocol 3.1 "never existed" as a distinct dialect: PG18 accepts it silently as < 3.2.
PROTOCOL_3_1 = protocol_version(3, 1)
# Startup parameter names with this prefix are protocol options (none defined in PG18).
PROTOCOL_OPTION_PREFIX = "_pq_."
# Startup parameter names ProcessStartupPacket treats specially.
PARAM_USER = "user"
PARAM_DATABASE = "database"
PARAM_OPTIONS = "options"
PARAM_REPLICATION = "replication"
PARAM_APPLICATION_NAME = "application_name"
# replication=database asks for a logical-replication walsender bound to a database.
REPLICATION_DATABASE = "database"
REPLICATION_NONE: Final = "none"
REPLICATION_PHYSICAL: Final = "physical"
REPLICATION_LOGICAL: Final = "logical"

# ReadyForQuery transaction status bytes.
TX_IDLE = b"I"
TX_IN_BLOCK = b"T"
TX_FAILED = b"E"

# Ends the field list of an ErrorResponse / NoticeResponse.
FIELD_TERMINATOR = b"\0"

SEVERITY_WARNING = "WARNING"

SQLSTATE_INVALID_PARAMETER_VALUE = "22023"


# --- password authentication (auth/password.py, auth/verifiers.py) ---

SQLSTATE_PROGRAM_LIMIT_EXCEEDED = "54000"
# Longest password pg_saslprep accepts (saslprep.h MAX_PASSWORD_LENGTH): "password too long".
MAX_PASSWORD_LENGTH = 1024
# AuthenticationMD5Password carries this many random salt bytes (auth.c CheckMD5Auth).
MD5_SALT_LENGTH = 4
# SASL mechanism names (scram-common.h) and the only channel-binding type PostgreSQL supports.
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"
SCRAM_CHANNEL_BINDING_TYPE = "tls-server-end-point"
# scram-common.h: key length (SHA-256 digest), raw server nonce bytes, default salt and iterations
# (the mock secret of auth-scram.c uses the defaults).
SCRAM_KEY_LENGTH = 32
SCRAM_RAW_NONCE_LENGTH = 18
SCRAM_DEFAULT_SALT_LENGTH = 16
SCRAM_DEFAULT_ITERATIONS = 4096


# --- GSSAPI encryption transport (be-secure-gssapi.c; shared/protocol.md §3.3) ---

# A data-phase packet, including its uint32 length word: "effectively part of the protocol
# spec and can't ever be changed" (PQ_GSS_MAX_PACKET_SIZE).
GSS_MAX_PACKET_SIZE = 16384
# A context-establishment packet, including its length word (PQ_GSS_AUTH_BUFFER_SIZE, the
# 2025 back-patched fix; earlier minors used 16384 for the handshake too).
GSS_AUTH_BUFFER_SIZE = 65536
