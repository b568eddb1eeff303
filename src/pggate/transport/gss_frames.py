"""GSSAPI encryption's packet framing, shared by both ends of pggate's GSSAPI links.

Every packet is an Int32 length, then the token (be-secure-gssapi.c and fe-secure-gssapi.c
frame alike). No python-gssapi here: the client module imports this without loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pggate.proto import codec, codes

Buffer = bytes | bytearray | memoryview

LENGTH: Final = codec.GSS_PACKET_LENGTH
LENGTH_SIZE: Final = LENGTH.size
# Largest token / wrapped payload after the length word, per phase.
MAX_HANDSHAKE_TOKEN: Final = codes.GSS_AUTH_BUFFER_SIZE - LENGTH_SIZE  # 65532
MAX_DATA_PAYLOAD: Final = codes.GSS_MAX_PACKET_SIZE - LENGTH_SIZE  # 16380


def unwrap_packets(
    buf: bytearray,
    data: Buffer,
    open_packet: Callable[[bytes], bytes],
    oversize: Callable[[int], Exception],
) -> bytes:
    """The plaintext of every complete packet in ``buf`` + ``data`` (Int32 length, then the
    wrapped token); a partial packet stays in ``buf``. ``open_packet`` unwraps one token;
    ``oversize(length)`` is the error for a length word above the payload limit, judged before
    the body arrives."""
    src: Buffer
    if buf:
        buf += data
        src = buf
    else:
        src = data
    end = len(src)
    pos = 0
    parts: list[bytes] = []
    while end - pos >= LENGTH_SIZE:
        (length,) = LENGTH.unpack_from(src, pos)
        if length > MAX_DATA_PAYLOAD:
            raise oversize(length)
        stop = pos + LENGTH_SIZE + length
        if stop > end:
            break
        parts.append(open_packet(bytes(src[pos + LENGTH_SIZE : stop])))
        pos = stop
    if src is buf:
        del buf[:pos]
    elif pos < end:
        buf[:] = src[pos:]
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)
