"""Philox4x32-10 in plain torch (int64 lanes emulating uint32), bit-identical to the Triton and CUDA
versions in ``ops/triton/verify.py`` and ``csrc/verify/philox.cuh``.

Randomness in verispec is stateless: every number is a pure function of
``(seed, offset, index, stream)``. The 64-bit ``seed`` is the Philox key; the counter is
``(index, stream, offset_lo, offset_hi)``. ``offset`` must differ between decoding steps of a request
(e.g. the number of tokens generated so far), ``index`` names the draw inside a step (word ``i % 4`` of
counter ``i // 4``, with ``i`` the node for an accept test and the vocabulary id for the residual draw)
and ``stream`` keeps accept tests and residual draws apart: they never share a random number.
"""

from __future__ import annotations

import torch

__all__ = [
    "STREAM_ACCEPT",
    "STREAM_RESIDUAL",
    "philox4x32",
    "accept_uniforms",
    "residual_exponentials",
    "uniform_open0_closed1",
    "exponential_from_bits",
    "request_keys",
]

STREAM_ACCEPT = 0x0ACC
STREAM_RESIDUAL = 0x0D2A
STREAM_SEED = 0x5EED  # key derivation (`request_keys`); never a counter of the accept/residual draws

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The 64-bit product of two uint32 values wraps in int64 two's complement with the same bits,
    # so masking recovers both halves (tested against the Random123 known-answer vectors).
    prod = b * a
    return (prod >> 32) & _MASK, prod & _MASK


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = 10) -> tuple[torch.Tensor, ...]:
    """Philox4x32 on int64 tensors holding uint32 values (broadcasting). Returns four int64 tensors."""
    c0, c1, c2, c3, k0, k1 = (torch.as_tensor(x, dtype=torch.int64) & _MASK for x in (c0, c1, c2, c3, k0, k1))
    # Keys keep their own (small) shape: only the counters grow to the broadcast shape.
    for i in range(rounds):
        if i:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    shape = torch.broadcast_shapes(c0.shape, c1.shape, c2.shape, c3.shape)
    return tuple(c.expand(shape) for c in (c0, c1, c2, c3))


def _key_and_offset(seed: torch.Tensor, offset: torch.Tensor):
    seed = seed.to(torch.int64)
    offset = offset.to(torch.int64)
    return seed & _MASK, (seed >> 32) & _MASK, offset & _MASK, (offset >> 32) & _MASK


def uniform_open0_closed1(bits: torch.Tensor) -> torch.Tensor:
    """float32 in (0, 1] from 32 random bits: ``((bits >> 8) + 1) * 2^-24``, exact in float32.

    Zero is impossible, so an accept test ``u * q <= p`` never passes for ``p == 0``."""
    return ((bits >> 8) + 1).to(torch.float32) * (2.0**-24)


def exponential_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """float32 Exp(1) variate ``-log1p(-s)``, ``s = (bits + 0.5) * 2^-32`` clamped below 1.

    ``log1p`` is written out (Kahan's form) with the same float32 operations in every backend."""
    s = (bits.to(torch.float32) + 0.5) * (2.0**-32)
    s = torch.clamp(s, max=1.0 - 2.0**-24)
    y = 1.0 - s  # float32
    # log1p(-s) = log(y) * (-s) / (y - 1); exact when y == 1 would divide by zero, then log1p(-s) = -s.
    denom = y - 1.0
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    l1p = torch.where(denom == 0, -s, torch.log(y) * (-s) / safe)
    return -l1p


def accept_uniforms(seed: torch.Tensor, offset: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in (0, 1] for accept tests: word ``index % 4`` of counter ``index // 4`` of the
    accept stream; all arguments broadcast (int64)."""
    k0, k1, o0, o1 = _key_and_offset(seed, offset)
    index = torch.as_tensor(index, dtype=torch.int64)
    words = torch.stack(philox4x32(index >> 2, STREAM_ACCEPT, o0, o1, k0, k1), dim=-1)
    lane = (index & 3).expand(words.shape[:-1]).unsqueeze(-1)
    return uniform_open0_closed1(words.gather(-1, lane).squeeze(-1))


def residual_exponentials(seed: torch.Tensor, offset: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """float32 ``[B, V]`` Exp(1) variates for the residual/bonus draw of each request (exponential race).

    ``seed`` and ``offset`` are int64 ``[B]``. Element ``v`` uses word ``v % 4`` of counter ``v // 4``."""
    k0, k1, o0, o1 = (t.unsqueeze(1) for t in _key_and_offset(seed, offset))
    n4 = (vocab_size + 3) // 4
    idx = torch.arange(n4, dtype=torch.int64, device=seed.device).unsqueeze(0)
    words = philox4x32(idx, STREAM_RESIDUAL, o0, o1, k0, k1)
    bits = torch.stack(words, dim=-1).reshape(seed.shape[0], n4 * 4)[:, :vocab_size]
    return exponential_from_bits(bits)


def request_keys(seed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 Philox keys, one per ``index``, derived from one 64-bit ``seed`` (int64 bits; broadcasts).

    One seed for a batch must still give every request its own stream: the key of request ``i`` is the
    first two words of Philox4x32-10 under key ``seed`` at counter ``(i_lo, i_hi, STREAM_SEED, 0)``. Distinct
    indices give distinct counters, so the keys are as unrelated as any two Philox outputs (``seed + i``
    would make request 1 of seed 0 replay request 0 of seed 1). Pure torch: runs where the tensors are."""
    seed = torch.as_tensor(seed, dtype=torch.int64)
    index = torch.as_tensor(index, dtype=torch.int64)
    w0, w1, _, _ = philox4x32(index & _MASK, (index >> 32) & _MASK, STREAM_SEED, 0, seed & _MASK, (seed >> 32) & _MASK)
    hi = w1 - ((w1 >> 31) << 32)  # the signed int32 with w1's bits: hi * 2^32 + w0 then cannot overflow int64
    return hi * (1 << 32) + w0
