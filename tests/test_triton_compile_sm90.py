"""Every Triton tree-attention and KV-commit variant the launchers pick, compiled for an H100 (no GPU).

The launchers run for real on CPU tensors with the kernels swapped for recorders, so the compiled
variants are exactly the ones a GPU call of the same shapes would launch (tile sizes, warps, flags,
stride specialisations). Checked: the compile succeeds, the shared memory fits an sm_90 block, and the
fp16/bf16 kernels do not spill registers beyond a few words (the hot paths; fp32 may spill, see
_pick_blocks). Also passes with Triton 3.6 (the GPU image's version): PYTHONPATH to a
``pip install --target DIR triton==3.6.0``.
The verify kernels have the same check in tests/test_verify_backends.py.
"""

from __future__ import annotations

import itertools
import json

import pytest
from _triton_aot import SM90_MAX_SHARED, SPILL_TOLERANCE, run_in_child

pytest.importorskip("triton")

# (Hq, Hkv, D): Llama-3-8B, Qwen2-7B-like (G = 7), MHA at D = 64, Gemma-2-9B (D = 256).
HEADS = [(32, 8, 128), (28, 4, 128), (12, 12, 64), (16, 8, 256)]
TREES = [1, 16, 64, 129]  # T = 129: five ancestor words, several packed-row tiles


def _tree_attention_calls():
    """Yield (label, fn, args, kwargs) for the variants the launcher picks over HEADS x TREES x dtypes
    x {contiguous, paged} x {plain, soft-cap + window}, each with and without split-KV."""
    import torch
    from _triton_aot import Recorder
    from test_tree_attention import Case

    from verispec.ops.tree_attention import _check
    from verispec.ops.triton import tree_attention as tk

    main, combine = Recorder(tk._tree_attention_kernel), Recorder(tk._combine_kernel)
    tk._tree_attention_kernel, tk._combine_kernel = main, combine
    try:
        for (Hq, Hkv, D), T, dtype, paged, extras in itertools.product(
                HEADS, TREES, (torch.bfloat16, torch.float16), (False, True), (False, True)):
            if dtype == torch.float16 and (paged or extras):
                continue  # bf16 covers the flags; fp16 only changes the element type
            opts = dict(softcap=30.0, window=4096) if extras else {}
            case = Case([40, 3], [T - 1, min(T, 3) - 1], Hq, Hkv, D, dtype=dtype, seed=T, **opts)
            args = list(case.args())
            table = None
            if paged:
                args[1], args[2], table = case.paged(16)
            for splits in (1, 2):
                out = torch.empty_like(case.q)
                p = _check(*args, case.scale, case.softcap, case.window, table, out)
                tk.tree_attention_fwd(*args, p, table, out, num_splits=splits)
                label = (f"{str(dtype)[6:]} Hq{Hq}/Hkv{Hkv} D{D} T{T} {'paged' if paged else 'contig'}"
                         f"{' softcap+window' if extras else ''} splits{splits}")
                for fn, rec in ((main.fn, main), (combine.fn, combine)):
                    for a, kw in rec.calls:
                        yield label, fn, a, kw
                    rec.calls.clear()
        case = Case([40], [15], 4, 2, 32, dtype=torch.float32)  # fp32: allowed to spill; must compile and fit
        out = torch.empty_like(case.q)
        p = _check(*case.args(), case.scale, None, None, None, out)
        tk.tree_attention_fwd(*case.args(), p, None, out, num_splits=2)
        for fn, rec in ((main.fn, main), (combine.fn, combine)):
            for a, kw in rec.calls:
                yield "float32 Hq4/Hkv2 D32 T16 contig splits2", fn, a, kw
    finally:
        tk._tree_attention_kernel, tk._combine_kernel = main.fn, combine.fn


def _commit_calls():
    import torch
    from _triton_aot import Recorder

    from verispec.ops.triton import commit_kv as ck
    from verispec.ops.triton.commit_kv import commit_kv_triton

    rec = Recorder(ck._commit_kv_kernel)
    ck._commit_kv_kernel = rec
    try:
        for (Hkv, D), dtype, paged, P in itertools.product([(8, 128), (4, 64), (2, 256)], (torch.bfloat16, torch.float16),
                                                           (False, True), (1, 5, 64)):
            lens = torch.tensor([10, 0], dtype=torch.int32)
            rows = torch.tensor([list(range(0, 2 * P, 2)), [0] + [-1] * (P - 1)], dtype=torch.int32)
            if paged:
                caches = [torch.zeros(20, 16, Hkv, D, dtype=dtype) for _ in range(4)]
                table = torch.arange(20, dtype=torch.int32).view(2, 10)
            else:
                caches = [torch.zeros(2, Hkv, 160, D, dtype=dtype) for _ in range(4)]
                table = None
            commit_kv_triton(caches[:2], caches[2:], lens, rows, block_table=table)
            for a, kw in rec.calls:
                yield f"{str(dtype)[6:]} Hkv{Hkv} D{D} P{P} {'paged' if paged else 'contig'}", rec.fn, a, kw
            rec.calls.clear()
    finally:
        ck._commit_kv_kernel = rec.fn


def compile_everything():
    """Child-process entry: compile each distinct variant once, on every core; print one JSON line per
    variant (with the first label that needed it)."""
    from _triton_aot import compile_many, specialize

    variants, modules = {}, {}
    for label, fn, args, kwargs in itertools.chain(_tree_attention_calls(), _commit_calls()):
        variants.setdefault(specialize(fn, args, kwargs), label)
        modules[fn.__name__] = fn.__module__
    jobs = [(modules[key[0]], key) for key in variants]
    for key, c in zip(variants, compile_many(jobs)):
        label = variants[key]
        print(json.dumps(dict(kernel=key[0], variant=label, registers=c.registers, spill_bytes=c.spill_bytes,
                              shared=c.shared, dtype=label.split()[0], constexprs=dict(key[2]),
                              options=dict(key[4]))), flush=True)


def test_tree_attention_and_commit_compile_for_sm90():
    rows = [json.loads(line) for line in run_in_child("test_triton_compile_sm90", "compile_everything").splitlines()
            if line.startswith("{")]
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"_tree_attention_kernel", "_combine_kernel", "_commit_kv_kernel"}, kernels
    too_big = [r for r in rows if r["shared"] > SM90_MAX_SHARED]
    assert not too_big, f"shared memory beyond an sm_90 block: {too_big[:3]}"
    spilling = [r for r in rows if r["spill_bytes"] > SPILL_TOLERANCE and r["dtype"] != "float32"]
    assert not spilling, f"fp16/bf16 variants spill registers: {spilling[:3]}"
