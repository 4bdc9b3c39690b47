"""The datastore file header as tests read and rewrite it (csrc/datastore/format.h FileHeader)."""

from __future__ import annotations

import struct

HEADER = struct.Struct("<8sIIII14QII4QIIQ")  # csrc/datastore/format.h FileHeader, 192 bytes
NAMES = ["magic", "version", "header_bytes", "token_bits", "offset_bits", "vocab_size", "num_tokens", "num_docs",
         "text_len", "map_entries", "map_offset", "text_offset", "sa_offset", "docs_offset", "file_bytes",
         "map_checksum", "text_checksum", "sa_checksum", "docs_checksum", "code_bits", "block_shift", "code_entries",
         "exc_entries", "extras_offset", "extras_checksum", "succ_heads", "succ_entries", "header_checksum"]


def header(raw: bytes) -> dict:
    return dict(zip(NAMES, HEADER.unpack_from(raw, 0)))


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def rewrite_header(path, **fields):
    raw = bytearray(path.read_bytes())
    vals = header(raw)
    vals.update(fields)
    packed = HEADER.pack(*[vals[n] for n in NAMES])
    packed = packed[:184] + struct.pack("<Q", fnv1a64(packed[:184]))
    raw[:192] = packed
    path.write_bytes(bytes(raw))
