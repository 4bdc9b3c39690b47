"""The CUDA kernels' own source, run on the CPU against the float64 oracle.

csrc/tree_attention/tree_attention.cu is compiled with g++ together with
csrc/testing/cuda_emulation.h, which turns every CUDA thread into a fiber and implements the warp
collectives (mma.m16n8k16, ldmatrix, shfl) from the PTX ISA's fragment layouts. The Python glue is
the real one (`verispec.ops.cuda.tree_attention.cuda_launch` builds the same keyword arguments it passes to the pybind launcher), so
this checks the whole CUDA path except what only hardware can show: timing, memory-model effects
beyond what the emulator models, and the tensor cores' own rounding. cp.async copies land at a random
point between issue and the wait_group that retires them, and warps are randomly held back so they
drift apart: deleting either cp.async wait or a __syncthreads from the kernels fails these tests. It
is no substitute for the `gpu`-marked tests; it catches index, masking, pipelining, barrier and
fragment-layout mistakes before a GPU is at hand.
"""

from __future__ import annotations

import ctypes
import random

import pytest
import torch
from _cuda_emulation import build_emulated
from test_tree_attention import TOL, Case, check_close

from verispec.ops.tree_attention import tree_attention_problem

pytestmark = [pytest.mark.op("tree_attention"), pytest.mark.backend("cuda")]

DRIVER_ATTENTION = r"""
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "testing/cuda_emulation.h"
#define VERISPEC_CUDA_EMULATION 1
#include "tree_attention/tree_attention.cu"

using namespace verispec;

template <int D>
bool run(const TreeAttentionParams& p) {
  emu::Dim3 grid{static_cast<unsigned>(p.m_tiles), static_cast<unsigned>(p.batch * p.kv_heads),
                 static_cast<unsigned>(p.num_splits)};
  bool ok = emu::launch(grid, kThreads, Tile<D>::smem_bytes(2), [&] {
    if (p.bf16) tree_attention_kernel<__nv_bfloat16, D>(p); else tree_attention_kernel<__half, D>(p);
  });
  if (ok && p.num_splits > 1) {
    grid.z = 1;
    ok = emu::launch(grid, kThreads, 0, [&] {
      if (p.bf16) tree_attention_combine_kernel<__nv_bfloat16, D>(p); else tree_attention_combine_kernel<__half, D>(p);
    });
  }
  return ok;
}

extern "C" int emu_tree_attention(
    uint64_t q, uint64_t k, uint64_t v, uint64_t out, uint64_t prefix_lens, uint64_t tree_lens, uint64_t ancestors,
    uint64_t positions, uint64_t block_table, uint64_t o_part, uint64_t lse_part, int batch, int q_heads,
    int kv_heads, int rows, int head_dim, const int64_t* q_stride, const int64_t* k_stride, const int64_t* v_stride,
    const int64_t* o_stride, const int64_t* anc_stride, const int64_t* pos_stride, int64_t bt_stride,
    int page_size, int64_t capacity, int64_t num_blocks, int num_splits, int m_tiles, float scale, float softcap,
    int window, int bf16) {
  TreeAttentionParams p{};
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<void*>(out);
  p.prefix_lens = reinterpret_cast<const int32_t*>(prefix_lens);
  p.tree_lens = reinterpret_cast<const int32_t*>(tree_lens);
  p.ancestors = reinterpret_cast<const uint32_t*>(ancestors);
  p.positions = reinterpret_cast<const int32_t*>(positions);
  p.block_table = reinterpret_cast<const int32_t*>(block_table);
  p.o_part = reinterpret_cast<float*>(o_part);
  p.lse_part = reinterpret_cast<float*>(lse_part);
  p.batch = batch; p.q_heads = q_heads; p.kv_heads = kv_heads; p.rows = rows; p.head_dim = head_dim;
  for (int i = 0; i < 3; ++i) {
    p.q_stride[i] = q_stride[i]; p.k_stride[i] = k_stride[i];
    p.v_stride[i] = v_stride[i]; p.o_stride[i] = o_stride[i];
  }
  for (int i = 0; i < 2; ++i) { p.anc_stride[i] = anc_stride[i]; p.pos_stride[i] = pos_stride[i]; }
  p.bt_stride = bt_stride; p.page_size = page_size; p.capacity = capacity; p.num_blocks = num_blocks;
  p.num_splits = num_splits;
  p.m_tiles = m_tiles; p.scale = scale; p.softcap = softcap; p.window = window; p.bf16 = bf16 != 0;
  bool ok = true;
  switch (head_dim) {
    case 64: ok = run<64>(p); break;
    case 128: ok = run<128>(p); break;
    case 256: ok = run<256>(p); break;
    default: return 2;
  }
  return ok ? 0 : 1;
}
"""

@pytest.fixture(scope="module")
def emu_lib(tmp_path_factory):
    return build_emulated(tmp_path_factory, "cuda_emu", {"attention.cpp": DRIVER_ATTENTION},
                          "libverispec_cuda_emu.so")


def _arr(values):
    return (ctypes.c_int64 * len(values))(*values)


def attention_launcher(lib):
    """A stand-in for `_C.tree_attention_cuda` with the same keyword arguments."""

    def launch(**kw):
        c = ctypes
        rc = lib.emu_tree_attention(
            *(c.c_uint64(kw[n]) for n in ("q", "k", "v", "out", "prefix_lens", "tree_lens", "ancestors",
                                          "positions", "block_table", "o_part", "lse_part")),
            *(c.c_int(kw[n]) for n in ("batch", "q_heads", "kv_heads", "rows", "head_dim")),
            *(_arr(kw[n]) for n in ("q_stride", "k_stride", "v_stride", "o_stride", "anc_stride", "pos_stride")),
            c.c_int64(kw["bt_stride"]), c.c_int(kw["page_size"]), c.c_int64(kw["capacity"]),
            c.c_int64(kw["num_blocks"]), c.c_int(kw["num_splits"]), c.c_int(kw["m_tiles"]), c.c_float(kw["scale"]), c.c_float(kw["softcap"]),
            c.c_int(kw["window"]), c.c_int(int(kw["bf16"])),
        )
        assert rc == 0, "emulated kernel deadlocked or was misconfigured (see stderr)"

    return launch


def run_emulated(lib, case: Case, *, num_splits: int, paged_block: int = 0) -> torch.Tensor:
    from verispec.ops.cuda.tree_attention import cuda_launch as _cuda_launch
    from verispec.ops.tree_attention import positions_from_ancestors

    args = list(case.args())
    table = None
    if paged_block:
        args[1], args[2], table = case.paged(paged_block)
    out = torch.full_like(case.q, float("nan"))
    p = tree_attention_problem(*args, scale=case.scale, softcap=case.softcap, window=case.window, block_table=table, out=out)
    if p.window and args[6] is None:
        args[6] = positions_from_ancestors(args[3], args[5])
    _cuda_launch(p, out, num_splits, 0, attention_launcher(lib))
    return out


CASES = [
    # prefix lens, node counts, Hq, Hkv, kinds, options, splits, paged block
    ([5, 0], [3, 6], 4, 1, ["chain", "star"], {}, 1, 0),
    ([150], [20], 8, 2, ["random"], {}, 3, 0),  # 3 prefix tiles over 3 splits, G=4
    ([70, 9], [39, -1], 8, 1, ["deep", "chain"], dict(softcap=20.0), 2, 0),  # 2 mask words, G=8, T_b=0
    ([100, 30], [10, 25], 2, 2, ["binary", "random"], dict(window=40), 2, 16),  # G=1, paged, window
    ([64], [15], 4, 1, ["random"], dict(window=5, softcap=3.0), 1, 1),  # page size 1
    ([20, 131], [40, 0], 8, 2, ["random", "chain"], {}, 2, 0),  # 41 rows x G=4: 3 row tiles; a lone root
    ([1500], [0], 8, 2, ["chain"], {}, 4, 16),  # decode-like T=1, long prefix, 4 splits, paged
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case_args", CASES, ids=lambda c: f"L{c[0]}-n{c[1]}-{c[2]}x{c[3]}-s{c[6]}-p{c[7]}")
def test_emulated_cuda_kernel_matches_oracle(emu_lib, case_args, dtype):
    prefix, nodes, Hq, Hkv, kinds, opts, splits, page = case_args
    case = Case(prefix, nodes, Hq, Hkv, 128, kinds=kinds, dtype=dtype, seed=sum(prefix) + Hq, **opts)
    got = run_emulated(emu_lib, case, num_splits=splits, paged_block=page)
    check_close(got, case.expected(), TOL[dtype], rtol=TOL[dtype], what="emulated CUDA")


@pytest.mark.parametrize("D", [64, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_cuda_other_head_dims(emu_lib, D, dtype):
    """D=64 (SmolLM, Qwen-0.5B style) and D=256 (Gemma; 32-key tiles, Q re-read from shared memory)."""
    case = Case([90, 7], [20, 33], 8, 2, D, kinds=["random", "deep"], dtype=dtype, seed=D, softcap=30.0, window=50)
    got = run_emulated(emu_lib, case, num_splits=2, paged_block=16)
    check_close(got, case.expected(), TOL[dtype], rtol=TOL[dtype], what=f"emulated CUDA D={D}")


def test_emulated_cuda_kernel_catches_a_wrong_mask(emu_lib):
    """The harness can fail: flipping one ancestor bit must change the emulated output."""
    case = Case([40], [12], 4, 1, 128, kinds=["chain"], dtype=torch.float16, seed=3)
    words = case.ancestors.view(torch.int32).clone()
    words[0, 5, 0] ^= 1 << 2  # row 5 stops seeing row 2
    case.ancestors = words.view(torch.uint32)
    got = run_emulated(emu_lib, case, num_splits=1)
    with pytest.raises(AssertionError, match="elements off"):
        check_close(got, case.expected(), TOL[torch.float16], rtol=TOL[torch.float16])


@pytest.mark.parametrize("seed", range(3))
def test_emulated_cuda_random_sweep(emu_lib, seed):
    rng = random.Random(1000 + seed)
    B = rng.randint(1, 3)
    Hkv = rng.choice([1, 2])
    G = rng.choice([1, 4, 8])
    opts = rng.choice([{}, dict(softcap=rng.uniform(5, 50)), dict(window=rng.randint(1, 200)),
                       dict(softcap=10.0, window=rng.randint(1, 60))])
    dtype = rng.choice([torch.float16, torch.bfloat16])
    case = Case([rng.choice([0, rng.randint(1, 400)]) for _ in range(B)],
                [rng.choice([-1, 0, rng.randint(1, 70)]) for _ in range(B)], Hkv * G, Hkv, rng.choice([64, 128]),
                kinds=[rng.choice(["chain", "star", "deep", "binary", "random"]) for _ in range(B)], dtype=dtype,
                seed=seed, **opts)
    got = run_emulated(emu_lib, case, num_splits=rng.choice([1, 2, 5]), paged_block=rng.choice([0, 1, 8, 16]))
    check_close(got, case.expected(), TOL[dtype], rtol=TOL[dtype], what=f"seed {seed} {opts}")


@pytest.mark.parametrize("paged_block", [0, 16])
def test_emulated_cuda_clamps_device_side_lengths(emu_lib, paged_block):
    """Same hostile lengths as the Triton test: request 0 still matches the oracle (an unclamped tree
    length read the next row's mask words and changed every row of the request)."""
    from test_tree_attention import hostile_lengths

    from verispec.ops.cuda.tree_attention import cuda_launch as _cuda_launch

    case = Case([8, 5], [31, 20], 2, 2, 128, dtype=torch.float16, seed=11)  # G = 1: one 64-row tile spans T
    args, table, out, p = hostile_lengths(case, paged_block)
    _cuda_launch(p, out, 2, 0, attention_launcher(emu_lib))
    check_close(out[:1], case.expected()[:1], TOL[torch.float16], rtol=TOL[torch.float16], what="request 0")


def test_emulated_cuda_bad_block_ids_never_read_outside_the_pool(emu_lib):
    """Device-side block ids are unchecked without a sync: keys whose block id is -1 or num_blocks read
    nothing (the NaN guard blocks around the pool never reach the output), and request 0, whose table
    is intact, still matches the oracle (issue 15, item 5)."""
    from test_tree_attention_bounds import guarded_pool

    from verispec.ops.cuda.tree_attention import cuda_launch as _cuda_launch

    case = Case([6, 3], [4, 5], 2, 2, 64, dtype=torch.float16, seed=5)
    q, _, _, prefix_lens, tree_lens, anc, pos = case.args()
    kp, vp, bad = guarded_pool(case, 4)
    out = torch.full_like(q, float("nan"))
    p = tree_attention_problem(q, kp, vp, prefix_lens, tree_lens, anc, pos, scale=case.scale, softcap=case.softcap,
                               window=case.window, block_table=bad, out=out)
    _cuda_launch(p, out, 2, 0, attention_launcher(emu_lib))
    assert torch.isfinite(out).all(), "a bad block id made the kernel read outside the pool"
    check_close(out[:1], case.expected()[:1], TOL[torch.float16], rtol=TOL[torch.float16], what="request 0")
