"""txn.wire: how messages become bytes (the lowest sub-layer of txn/).

- `type_ids.py`  the one table of type ids
- `codec.py`     registry, validated canonical CBOR encode/decode
- `frames.py`    length-prefixed frames and their decoder
- `envelope.py`  handshake, envelope, handler errors, ping (ids 1-99)
- `paxos.py`     registration of the Paxos messages (ids 100-199)

Pure. Importing the package registers the messaging and Paxos messages; the
request messages register when `txn.api` is imported.
"""

from txn.wire import paxos as _paxos  # noqa: F401 - registers the Paxos messages
from txn.wire.codec import (
    PROTOCOL_VERSION,
    TYPE_ID_RANGES,
    FieldSpec,
    ProtocolError,
    decode,
    encode,
    field_specs,
    from_plain,
    register,
    register_classes,
    registered_types,
    to_plain,
    type_id_of,
)
from txn.wire.envelope import Envelope, HandlerError, Handshake, HandshakeRefused, Kind, Ping, Pong
from txn.wire.frames import FRAME_HEADER_BYTES, MAX_FRAME_BYTES_DEFAULT, FrameDecoder, encode_frame

__all__ = [
    "Envelope", "FRAME_HEADER_BYTES", "FieldSpec", "FrameDecoder", "HandlerError", "Handshake", "HandshakeRefused",
    "Kind", "MAX_FRAME_BYTES_DEFAULT", "PROTOCOL_VERSION", "Ping", "Pong", "ProtocolError", "TYPE_ID_RANGES",
    "decode", "encode", "encode_frame", "field_specs", "from_plain", "register", "register_classes",
    "registered_types", "to_plain", "type_id_of",
]
