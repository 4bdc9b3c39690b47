"""The CUDA KV-commit kernel's own source, run on the CPU (see test_tree_attention_cuda_emulated.py for
how the emulator works): csrc/commit_kv/commit_kv.cu compiled with g++ and csrc/testing/cuda_emulation.h,
driven through the real Python glue (`verispec.ops.cuda.commit_kv.cuda_launch`)."""

from __future__ import annotations

import ctypes
import random

import pytest
import torch
from _cuda_emulation import build_emulated

pytestmark = [pytest.mark.op("commit_kv"), pytest.mark.backend("cuda")]

DRIVER_COMMIT = r"""
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "testing/cuda_emulation.h"
#define VERISPEC_CUDA_EMULATION 1
#include "commit_kv/commit_kv.cu"

using namespace verispec;

extern "C" int emu_commit_kv(uint64_t caches, int num_caches, uint64_t prefix_lens, uint64_t path_rows,
                             uint64_t block_table, int batch, int path_len, int kv_heads, int head_dim,
                             int elem_size, const int64_t* stride, const int64_t* rows_stride, int64_t bt_stride,
                             int page_size, int64_t capacity, int64_t num_blocks) {
  CommitKvParams p{};
  p.caches = reinterpret_cast<const uint64_t*>(caches);
  p.num_caches = num_caches;
  p.prefix_lens = reinterpret_cast<const int32_t*>(prefix_lens);
  p.path_rows = reinterpret_cast<const int32_t*>(path_rows);
  p.block_table = reinterpret_cast<const int32_t*>(block_table);
  p.batch = batch; p.path_len = path_len; p.kv_heads = kv_heads; p.head_dim = head_dim;
  p.elem_size = elem_size;
  for (int i = 0; i < 4; ++i) p.stride[i] = stride[i];
  p.rows_stride[0] = rows_stride[0]; p.rows_stride[1] = rows_stride[1];
  p.bt_stride = bt_stride; p.page_size = page_size; p.capacity = capacity;
  p.num_blocks = num_blocks;
  emu::Dim3 grid{static_cast<unsigned>(batch), static_cast<unsigned>(num_caches * kv_heads), 1};
  bool ok = emu::launch(grid, kThreads, 0, [&] {
    switch (elem_size) {
      case 2: commit_kv_kernel<uint16_t>(p); break;
      case 4: commit_kv_kernel<uint32_t>(p); break;
      default: commit_kv_kernel<uint64_t>(p); break;
    }
  });
  return ok ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def emu_lib(tmp_path_factory):
    return build_emulated(tmp_path_factory, "cuda_emu_commit", {"commit.cpp": DRIVER_COMMIT},
                          "libverispec_cuda_emu_commit.so")


def _arr(values):
    return (ctypes.c_int64 * len(values))(*values)


def commit_launcher(lib):
    """A stand-in for `_C.commit_kv_cuda` with the same keyword arguments."""

    def launch(**kw):
        c = ctypes
        rc = lib.emu_commit_kv(
            c.c_uint64(kw["caches"]), c.c_int(kw["num_caches"]), c.c_uint64(kw["prefix_lens"]),
            c.c_uint64(kw["path_rows"]), c.c_uint64(kw["block_table"]),
            *(c.c_int(kw[n]) for n in ("batch", "path_len", "kv_heads", "head_dim", "elem_size")),
            _arr(kw["stride"]), _arr(kw["rows_stride"]), c.c_int64(kw["bt_stride"]), c.c_int(kw["page_size"]),
            c.c_int64(kw["capacity"]), c.c_int64(kw["num_blocks"]),
        )
        assert rc == 0

    return launch


@pytest.mark.parametrize("paged", [False, True])
def test_emulated_cuda_commit_matches_reference(emu_lib, paged):
    from test_commit_kv import expected_contiguous, from_paged, make_batch, to_paged

    from verispec.ops.cuda.commit_kv import cuda_launch as _cuda_launch

    rng = random.Random(int(paged))
    prefix, tree, P = [4, 0, 9], [12, 3, 40], 20  # P > 16: two staging chunks
    B, H, D, layers = len(prefix), 2, 16, 3
    S = max(p + t for p, t in zip(prefix, tree)) + 1
    paths, rows = make_batch(prefix, tree, P, rng)
    dense = [torch.randn(B, H, S, D).to(torch.bfloat16) for _ in range(2 * layers)]
    want = [expected_contiguous(c, prefix, paths) for c in dense]
    table = None
    if paged:
        per = (S + 3) // 4
        perm = torch.randperm(B * per + 1, generator=torch.Generator().manual_seed(2))
        caches = []
        for c in dense:
            pg, table = to_paged(c, 4, perm)
            caches.append(pg)
    else:
        caches = [c.clone() for c in dense]

    capacity = table.shape[1] * 4 if paged else S
    _cuda_launch(caches, torch.tensor(prefix, dtype=torch.int32), rows, table, capacity, 0, commit_launcher(emu_lib))
    for got, exp in zip(caches, want):
        got = from_paged(got, table, S) if paged else got
        assert torch.equal(got, exp)


@pytest.mark.parametrize("rows,L", [([[0, -1, 0]], 9), ([[0, 5]], 8), ([[0, 1, 1, 2]], 6)])
def test_emulated_cuda_commit_malformed_paths_touch_nothing(emu_lib, rows, L):
    """The CUDA commit kernel keeps malformed paths inside the request's slots (see moves())."""
    from verispec.ops.cuda.commit_kv import cuda_launch as _cuda_launch

    cache = torch.randn(1, 2, 10, 16).to(torch.bfloat16)
    before = cache.clone()
    _cuda_launch([cache], torch.tensor([L], dtype=torch.int32), torch.tensor(rows, dtype=torch.int32), None, 10, 0,
                 commit_launcher(emu_lib))
    assert torch.equal(cache, before)


def test_emulated_cuda_commit_bad_block_ids_stay_inside_the_pool(emu_lib):
    """Device-side block ids are unchecked without a sync: a move whose block id is -1 or num_blocks is
    dropped, never done through the guard blocks around the pool (issue 15, item 5)."""
    from test_commit_kv_bounds import check_untouched, guarded_batch

    from verispec.ops.cuda.commit_kv import cuda_launch as _cuda_launch

    pools, bufs, prefix, rows, table, bad = guarded_batch(torch.bfloat16)
    before = [b.clone() for b in bufs]
    for pool in pools:
        _cuda_launch([pool], prefix, rows, bad, bad.shape[1] * 4, 0, commit_launcher(emu_lib))
    check_untouched(bufs, before)
    for got, old in zip(pools, before):
        assert torch.equal(got[1, 2], old[2, 3])  # request 0: entry 7 -> 6 (both in block 1) moved
        assert torch.equal(got[1, 3], old[2, 3])  # entry 8 (bad block) -> 7 dropped
