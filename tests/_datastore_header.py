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


# Section checksums (csrc/datastore/format.cpp section_checksum), so tests can damage a section
# behind a valid checksum and check that the structural checks, not the checksum, catch it.
_M = 0xFFFFFFFFFFFFFFFF


def _mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


def _lane_step(h: int, w: int) -> int:
    x = h ^ ((w * 0x9E3779B97F4A7C15) & _M)
    return ((((x << 31) | (x >> 33)) & _M) * 0xFF51AFD7ED558CCD) & _M


def _chunk_hash(p: bytes, version: int) -> int:
    h = [0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89]
    n = len(p)
    i = 0
    while i + 32 <= n:
        for lane in range(4):
            h[lane] = _lane_step(h[lane], int.from_bytes(p[i + 8 * lane:i + 8 * lane + 8], "little"))
        i += 32
    tail = 0
    if version < 3:  # the old OR-folded tail
        for j in range(n - i):
            tail |= p[i + j] << (8 * (j & 7))
    else:
        for lane, at in enumerate(range(i, n, 8)):
            h[lane] = _lane_step(h[lane], int.from_bytes(p[at:at + 8], "little"))
    return _mix(h[0] ^ _mix(h[1] ^ _mix(h[2] ^ _mix(h[3] ^ tail ^ n))))


def section_checksum(data: bytes, version: int = 3) -> int:
    chunk = 16 << 20
    h = _mix(len(data) ^ 0x5851F42D4C957F2D)
    for c in range(0, len(data), chunk):
        h = _mix(h ^ _chunk_hash(data[c:c + chunk], version))
    return h


def packed_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8 + 8


def sections(h: dict) -> dict:
    """name -> (offset, bytes, checksum field) of every checksummed section (format.h Layout)."""
    code_bits = h["token_bits"] if h["version"] == 1 else h["code_bits"]
    out = {
        "map": (h["map_offset"], 4 * h["map_entries"], "map_checksum"),
        "text": (h["text_offset"], packed_bytes(h["text_len"], code_bits), "text_checksum"),
        "sa": (h["sa_offset"], packed_bytes(h["num_tokens"], h["offset_bits"]), "sa_checksum"),
        "docs": (h["docs_offset"], 8 * (h["num_docs"] + 1), "docs_checksum"),
    }
    if h["extras_offset"]:
        out["extras"] = (h["extras_offset"], h["file_bytes"] - h["extras_offset"], "extras_checksum")
    return out


def reseal(raw: bytearray) -> bytearray:
    """Recompute every section checksum (as the header's version computes them) and the header
    checksum of a file image."""
    h = header(raw)
    for off, size, field in sections(h).values():
        h[field] = section_checksum(bytes(raw[off:off + size]), h["version"])
    packed = HEADER.pack(*[h[n] for n in NAMES])
    raw[:192] = packed[:184] + struct.pack("<Q", fnv1a64(packed[:184]))
    return raw


def suffix_array(raw: bytes) -> list[int]:
    h = header(raw)
    off, size, _ = sections(h)["sa"]
    bits, big = h["offset_bits"], int.from_bytes(raw[off:off + size], "little")
    return [(big >> (k * bits)) & ((1 << bits) - 1) for k in range(h["num_tokens"])]


def write_suffix_array(raw: bytearray, sa: list[int]) -> bytearray:
    h = header(raw)
    off, size, _ = sections(h)["sa"]
    bits, big = h["offset_bits"], 0
    for k, v in enumerate(sa):
        big |= v << (k * bits)
    raw[off:off + size] = big.to_bytes(size, "little")
    return reseal(raw)
