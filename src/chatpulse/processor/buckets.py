"""Time buckets of tokens in a channel's state: the layout de-duplication, the moderation
join and chatter sessions share.

A bucket is one state record ``<prefix><bucket number>`` holding newline-separated tokens,
or, when a channel's rate makes it larger than ``chunk_bytes``, parts: part 0 (``P``, the
part count, then tokens) at the bucket's key and parts 1.. at the key plus the part number.
Readers take the part count from part 0, so a part past it is never read.
"""

import hashlib
import struct
from typing import Protocol

__all__ = [
    "BUCKET_PARTS",
    "MAX_TOKEN",
    "KeyValueStore",
    "bucket_key",
    "delete_bucket",
    "read_bucket",
    "token_of",
    "write_bucket",
]

_pack_q = struct.Struct(">q").pack


class KeyValueStore(Protocol):
    """The slice of ``quixstreams.State`` the processor's state code uses (bytes in, bytes
    out)."""

    def get_bytes(self, key: bytes) -> bytes | None: ...

    def set_bytes(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


MAX_TOKEN = 64  # a longer text is kept as a 33-byte digest
BUCKET_PARTS = struct.Struct(">H")  # a bucket split into parts: their number, a part's key


def token_of(text: str) -> bytes:
    """``text`` as a bucket token: its bytes, or a digest of them when they hold the
    separator or pass :data:`MAX_TOKEN` bytes (longer than any Twitch id)."""
    raw = text.encode()
    if b"\n" in raw or len(raw) > MAX_TOKEN:
        raw = b"#" + hashlib.blake2b(raw, digest_size=16).hexdigest().encode()
    return raw


def bucket_key(bucket: int, prefix: bytes) -> bytes:
    return prefix + _pack_q(bucket)


def read_bucket(store: KeyValueStore, bucket: int, prefix: bytes) -> set[bytes]:
    key = bucket_key(bucket, prefix)
    data = store.get_bytes(key) or b""
    if data[:1] != b"P":
        tokens = set(data.split(b"\n"))
    else:  # split into parts (see write_bucket)
        (count,) = BUCKET_PARTS.unpack_from(data, 1)
        tokens = set(data[3:].split(b"\n"))
        for number in range(1, count):
            part = store.get_bytes(key + BUCKET_PARTS.pack(number)) or b""
            tokens.update(part.split(b"\n"))
    tokens.discard(b"")
    return tokens


def delete_bucket(store: KeyValueStore, bucket: int, prefix: bytes) -> None:
    key = bucket_key(bucket, prefix)
    data = store.get_bytes(key) or b""
    if data[:1] == b"P":
        (count,) = BUCKET_PARTS.unpack_from(data, 1)
        for number in range(1, count):
            store.delete(key + BUCKET_PARTS.pack(number))
    store.delete(key)


def write_bucket(
    store: KeyValueStore, bucket: int, tokens: set[bytes], prefix: bytes, chunk_bytes: int
) -> None:
    """A bucket's tokens as one record, or split into parts of at most ``chunk_bytes``.

    A bucket only grows and a part wastes less than one token (65 bytes), so a rewrite has
    at most one part fewer than before: that one is deleted.
    """
    data = b"\n" + b"\n".join(tokens) + b"\n"
    key = bucket_key(bucket, prefix)
    if len(data) <= chunk_bytes:
        store.set_bytes(key, data)
        return
    limit = chunk_bytes - 8
    parts: list[list[bytes]] = [[]]
    size = 0
    for token in tokens:
        if size + len(token) + 1 > limit:
            parts.append([])
            size = 0
        parts[-1].append(token)
        size += len(token) + 1
    count = BUCKET_PARTS.pack(len(parts))
    store.set_bytes(key, b"P" + count + b"\n" + b"\n".join(parts[0]) + b"\n")
    for number, part in enumerate(parts[1:], 1):
        store.set_bytes(key + BUCKET_PARTS.pack(number), b"\n" + b"\n".join(part) + b"\n")
    store.delete(key + BUCKET_PARTS.pack(len(parts)))
