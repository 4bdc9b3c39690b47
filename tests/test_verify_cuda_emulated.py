"""The CUDA verify kernels' own source, run on the CPU against the per-request torch reference.

csrc/verify/verify.cu is compiled with g++ together with csrc/testing/cuda_emulation.h (every CUDA
thread a fiber, barriers and warp exchanges emulated, warps randomly held back) plus the few primitives
verify.cu needs beyond the attention kernels (blockDim, shfl.down / shfl.idx, __ldg, __umulhi,
__uint2float_rn), defined in the driver below. The Python glue is the real one
(`verispec.ops.cuda.verify.verify_cuda_launch` makes the same call it makes into `verispec._C`). Integer
outputs must equal the reference's, draw for draw (same Philox numbers). This checks index arithmetic,
the walk, reductions, barriers and the Philox device code; only a GPU shows timing, the memory model
beyond the emulator's and the device libm's last bits.
"""

from __future__ import annotations

import ctypes
import random

import pytest
import torch
from _cuda_emulation import build_emulated
from _verify_inputs import max_draw_boost, peaked_logits
from test_verify_backends import _capture, _random_trees

from verispec import DraftTree
from verispec.ops import verify as vmod
from verispec.ops.cuda.verify import verify_cuda_launch

pytestmark = [pytest.mark.op("verify"), pytest.mark.backend("cuda")]

DRIVER = r"""
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <climits>
#include "testing/cuda_emulation.h"

// What verify.cu uses beyond the attention kernels.
#define blockDim (::emu::st().block_dim)
namespace emu {
template <typename V>
V shfl_down(V v, int delta) {
  const int src = lane_id() + delta;
  return shfl_from(v, src < 32 ? src : lane_id());
}
template <typename V>
V shfl_idx(V v, int src) {
  return shfl_from(v, src);
}
}  // namespace emu
#define __shfl_down_sync(mask, v, d) ::emu::shfl_down((v), (d))
#define __shfl_sync(mask, v, s) ::emu::shfl_idx((v), (s))
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32); }
inline float __uint2float_rn(uint32_t x) { return static_cast<float>(x); }

#define VERISPEC_CUDA_EMULATION 1
#include "verify/verify.cu"

using namespace verispec;

template <typename T>
bool run_all(const VerifyParams& p) {
  const unsigned B = static_cast<unsigned>(p.batch);
  bool ok = emu::launch(emu::Dim3{static_cast<unsigned>(p.rows), 1, 1}, p.vocab >= 8192 ? kStatsThreads : 128, 0,
                        [&] { row_stats_kernel<T>(p); });
  ok = ok && emu::launch(emu::Dim3{B, 1, 1}, kWalkThreads, 0, [&] { walk_kernel<T>(p); });
  if (p.mode != VerifyMode::kGreedy)
    ok = ok && emu::launch(emu::Dim3{static_cast<unsigned>(p.splits), B, 1}, kRaceThreads, 0, [&] { race_kernel<T>(p); });
  ok = ok && emu::launch(emu::Dim3{B, 1, 1}, 32, 0, [&] { finalize_kernel(p); });
  return ok;
}

#define P(T, x) reinterpret_cast<T>(x)
extern "C" int emu_verify(
    uint64_t logits, int dtype, int64_t stride_row, int rows, int batch, int vocab, int mode, uint64_t tokens,
    uint64_t cu_nodes, uint64_t cu_rows, uint64_t first_child, uint64_t next_sibling, uint64_t temperature,
    uint64_t scale, uint64_t scale_rows, uint64_t threshold, float typical_epsilon, float typical_delta,
    uint64_t draft_probs, int64_t stride_q, uint64_t seed, uint64_t offset, uint64_t accept_uniforms,
    uint64_t exponentials, uint64_t row_max, uint64_t row_sum, uint64_t row_entropy, uint64_t row_argmax,
    uint64_t scratch, uint64_t state, uint64_t state_f, uint64_t part_key, uint64_t part_idx, int splits,
    uint64_t accepted_nodes, uint64_t num_accepted, uint64_t out_tokens, int max_depth, uint64_t stream) {
  VerifyParams p{};
  p.logits = P(const void*, logits); p.dtype = static_cast<LogitsDtype>(dtype); p.stride_row = stride_row;
  p.rows = rows; p.batch = batch; p.vocab = vocab; p.mode = static_cast<VerifyMode>(mode);
  p.tokens = P(const int32_t*, tokens); p.cu_nodes = P(const int32_t*, cu_nodes); p.cu_rows = P(const int32_t*, cu_rows);
  p.first_child = P(const int32_t*, first_child); p.next_sibling = P(const int32_t*, next_sibling);
  p.temperature = P(const float*, temperature); p.scale = P(const float*, scale); p.scale_rows = P(const float*, scale_rows);
  p.threshold = P(const float*, threshold); p.typical_epsilon = typical_epsilon; p.typical_delta = typical_delta;
  p.draft_probs = P(const float*, draft_probs); p.stride_q = stride_q;
  p.seed = P(const int64_t*, seed); p.offset = P(const int64_t*, offset);
  p.accept_uniforms = P(const float*, accept_uniforms); p.exponentials = P(const float*, exponentials);
  p.row_max = P(float*, row_max); p.row_sum = P(float*, row_sum); p.row_entropy = P(float*, row_entropy);
  p.row_argmax = P(int32_t*, row_argmax); p.scratch = P(float*, scratch); p.state = P(int32_t*, state);
  p.state_f = P(float*, state_f); p.part_key = P(float*, part_key); p.part_idx = P(int32_t*, part_idx);
  p.splits = splits; p.accepted_nodes = P(int32_t*, accepted_nodes); p.num_accepted = P(int32_t*, num_accepted);
  p.out_tokens = P(int32_t*, out_tokens); p.max_depth = max_depth;
  if (splits != (vocab + kRaceChunk - 1) / kRaceChunk) return 3;
  bool ok = false;
  switch (p.dtype) {
    case LogitsDtype::kFloat32: ok = run_all<float>(p); break;
    case LogitsDtype::kFloat16: ok = run_all<__half>(p); break;
    case LogitsDtype::kBFloat16: ok = run_all<__nv_bfloat16>(p); break;
    default: return 2;
  }
  return ok ? 0 : 1;
}
"""

# argument kinds of emu_verify, in order (u: pointer / uint64, i: int, l: int64, f: float)
KINDS = "uiliiii" + "u" * 9 + "ff" + "ul" + "u" * 13 + "i" + "uuu" + "i" + "u"


@pytest.fixture(scope="module")
def emu_C(tmp_path_factory):
    """A stand-in for `verispec._C` whose `verify_cuda` runs the emulated kernels."""
    lib = build_emulated(tmp_path_factory, "verify_emu", {"verify_emu.cpp": DRIVER}, "libverify_emu.so")
    ctype = {"u": ctypes.c_uint64, "i": ctypes.c_int, "l": ctypes.c_int64, "f": ctypes.c_float}
    assert len(KINDS) == 39
    lib.emu_verify.argtypes = [ctype[k] for k in KINDS]
    lib.emu_verify.restype = ctypes.c_int

    class EmulatedC:
        verify_race_chunk = 4096

        @staticmethod
        def verify_cuda(*args):
            rc = lib.emu_verify(*args)
            assert rc == 0, f"emulated verify failed (rc={rc}: 1 deadlock, 2 dtype, 3 splits)"

    return EmulatedC


def _compare(C, logits, trees, **kw):
    pr = _capture(logits, trees, **kw)
    ref = vmod.verify_reference(pr)
    got = verify_cuda_launch(pr, C, 0)
    for name in ("tokens", "accepted_nodes", "num_accepted"):
        a, b = getattr(ref, name), getattr(got, name)
        assert torch.equal(a, b), f"{name}: reference {a.tolist()} vs emulated CUDA {b.tolist()}"
    return ref


def _logits(trees, V, gen, scale, dtype=torch.float32):
    return peaked_logits(trees, V, gen, scale, max_draw_boost(V, scale)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_emulated_greedy(emu_C, dtype):
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    trees = _random_trees(rng, 5, 111, 8) + [DraftTree.empty()]
    ref = _compare(emu_C, _logits(trees, 111, gen, 4.0, dtype), trees, mode="greedy")
    assert int(ref.num_accepted.max()) >= 2, ref.num_accepted.tolist()  # accept walks were compared too


def test_emulated_greedy_golden(emu_C):
    trees = [DraftTree([7, 3, 5], [-1, 0, -1]), DraftTree.empty(), DraftTree.chain([2, 4, 6])]
    logits = torch.zeros(9, 111)
    for r, a in enumerate([7, 9, 0, 1, 4, 2, 4, 8, 3]):
        logits[r, a] = 5.0
    ref = _compare(emu_C, logits, trees, mode="greedy")
    assert ref.tokens.tolist() == [[7, 9, -1, -1], [4, -1, -1, -1], [2, 4, 8, -1]]


@pytest.mark.parametrize("V", [7, 111])
def test_emulated_exact_deterministic(emu_C, V):
    rng, gen = random.Random(10 + V), torch.Generator().manual_seed(10 + V)
    for trial in range(2):
        trees = _random_trees(rng, 5, V, 9)
        _compare(emu_C, _logits(trees, V, gen, 1.5), trees, mode="exact",
                 temperature=torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0]), seed=torch.arange(5) * 7 + trial, offset=11)


@pytest.mark.parametrize("V", [7, 111])
def test_emulated_exact_draft_probs(emu_C, V):
    rng, gen = random.Random(20 + V), torch.Generator().manual_seed(20 + V)
    for trial in range(2):
        trees = _random_trees(rng, 5, V, 8)
        N = sum(len(t) for t in trees)
        q = torch.softmax(torch.randn(N, V, generator=gen) * 2, dim=1)
        _compare(emu_C, _logits(trees, V, gen, 1.0), trees, mode="exact", draft_probs=q,
                 temperature=torch.tensor([1.0, 0.7, 1.0, 0.0, 1.2]), seed=trial, offset=torch.arange(5))


@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.6), (5, 0.8)])
def test_emulated_top_k_top_p_and_typical(emu_C, top_k, top_p):
    rng, gen = random.Random(30), torch.Generator().manual_seed(30)
    trees = _random_trees(rng, 4, 50, 7)
    logits = _logits(trees, 50, gen, 1.5)
    _compare(emu_C, logits, trees, mode="exact", top_k=top_k, top_p=top_p, temperature=0.9, seed=5,
             offset=torch.arange(4))
    _compare(emu_C, logits, trees, mode="typical", top_k=top_k, top_p=top_p, temperature=0.9, seed=5,
             typical_epsilon=0.2, typical_delta=0.4)


def test_emulated_uniforms_hook_and_empty_residual(emu_C):
    rng, gen = random.Random(50), torch.Generator().manual_seed(50)
    trees = _random_trees(rng, 3, 20, 6)
    N = sum(len(t) for t in trees)
    hook = vmod.VerifyUniforms((torch.randint(1, 2**24 + 1, (N,), generator=gen).float() * 2.0**-24),
                               torch.empty(3, 20).exponential_(generator=gen))
    _compare(emu_C, _logits(trees, 20, gen, 1.0), trees, mode="exact", uniforms=hook)
    # q >= p everywhere and u = 1: the residual is empty, the draw comes from p (token 0 by the hook)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    q = vmod.target_probs(logits[:1], torch.ones(1), None) * 1.0005
    hook = vmod.VerifyUniforms(torch.ones(1), torch.tensor([[1e-3, 1.0, 1.0, 1.0]]))
    ref = _compare(emu_C, logits, [DraftTree.chain([2])], mode="exact", draft_probs=q, uniforms=hook)
    assert ref.tokens.tolist() == [[0, -1]]


@pytest.mark.parametrize("V", [111, 9000])
def test_emulated_rejected_siblings_with_draft_probs(emu_C, V):
    """Three root children with q = (point mass on their token + p) / 2, far above p at the token:
    u = 1 rejects all three, so two block-wide residual passes run in the walk (their sums decide the
    next residual's sign pattern) and the third subtraction happens in the race."""
    gen = torch.Generator().manual_seed(V)
    B = 4
    trees = [DraftTree([3 + b, 40 + b, 77 + b], [-1, -1, -1]) for b in range(B)]
    logits = _logits(trees, V, gen, 1.0)
    roots = logits[torch.tensor([4 * b for b in range(B)])]
    p_root = vmod.target_probs(roots, torch.ones(B), None)
    q = torch.zeros(3 * B, V)
    for j, t in enumerate(torch.cat([t.tokens for t in trees]).tolist()):
        q[j] = 0.5 * p_root[j // 3]
        q[j, t] += 0.5
    hook = vmod.VerifyUniforms(torch.ones(3 * B), torch.empty(B, V).exponential_(generator=gen))
    ref = _compare(emu_C, logits, trees, mode="exact", draft_probs=q, uniforms=hook)
    assert (ref.num_accepted == 0).all()


def test_emulated_vocab_over_one_race_chunk(emu_C):
    """V = 9000 > 4096: three race splits per request, 512-thread row stats, 16-byte loads."""
    rng, gen = random.Random(60), torch.Generator().manual_seed(60)
    trees = [DraftTree.chain([rng.randrange(9000) for _ in range(2)]), DraftTree([1, 2], [-1, -1])] * 4
    logits = _logits(trees, 9000, gen, 1.0, torch.bfloat16)
    _compare(emu_C, logits, trees, mode="greedy")
    _compare(emu_C, logits, trees, mode="exact", seed=3, offset=1)
    N = sum(len(t) for t in trees)
    q = torch.softmax(torch.randn(N, 9000, generator=gen), dim=1)
    _compare(emu_C, logits, trees, mode="exact", seed=3, offset=1, draft_probs=q)


def test_emulated_harness_can_fail(emu_C, monkeypatch):
    """A wrong Philox stream in the kernel's inputs (another offset) changes the draws: caught."""
    rng, gen = random.Random(70), torch.Generator().manual_seed(70)
    trees = _random_trees(rng, 4, 30, 6)
    logits = _logits(trees, 30, gen, 0.3)
    pr = _capture(logits, trees, mode="exact", seed=1, offset=torch.arange(4))
    ref = vmod.verify_reference(pr)
    from dataclasses import replace

    shifted = replace(pr, offset=pr.offset + 1)
    got = verify_cuda_launch(shifted, emu_C, 0)
    assert not torch.equal(ref.tokens, got.tokens)


def test_emulated_masked_tokens(emu_C):
    rng, gen = random.Random(95), torch.Generator().manual_seed(95)
    trees = _random_trees(rng, 4, 40, 6)
    logits = _logits(trees, 40, gen, 1.5)
    logits[:, ::3] = torch.finfo(torch.float32).min
    for kw in (dict(mode="greedy"), dict(mode="exact", temperature=torch.tensor([1.0, 1e-30, 0.5, 2.0])),
               dict(mode="typical", temperature=0.8)):
        _compare(emu_C, logits, trees, seed=3, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask", ["finfo", "-inf"])
def test_emulated_typical_high_entropy_masked(emu_C, mask, dtype):
    """The entropy bar delta * exp(-H) of near-flat masked rows (see the Triton test of the same name):
    an overflowed finfo.min mask made 0 * -inf, and a leading -inf made -inf - -inf."""
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 64, generator=gen) * 0.3
    logits[:, ::3] = torch.finfo(torch.float32).min if mask == "finfo" else float("-inf")
    logits = logits.to(dtype)
    for temperature in (0.5, 1.0):
        ref = _compare(emu_C, logits, [DraftTree.chain([1, 2])], mode="typical", temperature=temperature, seed=1)
        assert ref.tokens.tolist()[0][:2] == [1, 2]


def test_emulated_neg_inf_masks_over_whole_blocks(emu_C):
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 5000, generator=gen)
    logits[:, :4096] = float("-inf")
    logits[0, 4500] = logits[1, 4600] = logits[2, 4652] = logits[3, 4700] = 30.0
    for kw in (dict(mode="greedy"), dict(mode="exact", temperature=1.0, seed=2), dict(mode="typical")):
        ref = _compare(emu_C, logits, [DraftTree.chain([4500, 4600, 4652])], **kw)
        assert ref.tokens.tolist()[0][:4] == [4500, 4600, 4652, 4700], kw
