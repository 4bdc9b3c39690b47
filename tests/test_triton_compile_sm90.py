"""Every Triton kernel variant the launchers pick, compiled for an H100 (no GPU): tree attention, KV
commit and verify.

The launchers run for real on CPU tensors with the kernels swapped for recorders, so the compiled
variants are exactly the ones a GPU call of the same shapes would launch (tile sizes, warps, flags,
stride specialisations). Checked: the compile succeeds, the shared memory fits an sm_90 block, and the
fp16/bf16 kernels do not spill registers beyond a few words (the hot paths; fp32 may spill, see
_pick_blocks). Also passes with Triton 3.6 (the GPU image's version): PYTHONPATH to a
``pip install --target DIR triton==3.6.0``.
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

    from verispec.ops.tree_attention import tree_attention_problem
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
                p = tree_attention_problem(*args, scale=case.scale, softcap=case.softcap, window=case.window,
                                           block_table=table, out=out)
                tk.tree_attention_fwd(p, out, num_splits=splits)
                label = (f"{str(dtype)[6:]} Hq{Hq}/Hkv{Hkv} D{D} T{T} {'paged' if paged else 'contig'}"
                         f"{' softcap+window' if extras else ''} splits{splits}")
                for fn, rec in ((main.fn, main), (combine.fn, combine)):
                    for a, kw in rec.calls:
                        yield label, fn, a, kw
                    rec.calls.clear()
        case = Case([40], [15], 4, 2, 32, dtype=torch.float32)  # fp32: allowed to spill; must compile and fit
        out = torch.empty_like(case.q)
        p = tree_attention_problem(*case.args(), scale=case.scale, out=out)
        tk.tree_attention_fwd(p, out, num_splits=2)
        for fn, rec in ((main.fn, main), (combine.fn, combine)):
            for a, kw in rec.calls:
                yield "float32 Hq4/Hkv2 D32 T16 contig splits2", fn, a, kw
    finally:
        tk._tree_attention_kernel, tk._combine_kernel = main.fn, combine.fn


def _commit_calls():
    import torch
    from _triton_aot import Recorder

    from verispec.ops.commit_kv import commit_kv_problem
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
            commit_kv_triton(commit_kv_problem(caches[:2], caches[2:], lens, rows, block_table=table))
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


def test_verify_compiles_for_sm90():
    """The interpreter accepts code the compiler rejects (loop-carried types, branches): compile every
    kernel variant for an H100 (no GPU needed) so a GPU session does not meet the first compile error,
    and check that none spills registers or outgrows an sm_90 block's shared memory. The signatures are
    written out by hand because the launcher's GPU constants (the race chunk) differ from its CPU ones."""
    rows = [json.loads(line) for line in run_in_child("test_triton_compile_sm90", "_compile_all_for_sm90").splitlines()
            if line.startswith("{")]
    assert {r["name"] for r in rows} == {"_row_stats_kernel", "_walk_kernel", "_race_kernel", "_finalize_kernel"}
    assert not [r for r in rows if r["spill_bytes"] > SPILL_TOLERANCE], rows
    assert not [r for r in rows if r["shared"] > SM90_MAX_SHARED], rows


def _compile_all_for_sm90():
    import dataclasses

    from _triton_aot import compile_sm90

    from verispec.ops.triton import verify as tk

    f, i, l = "*fp32", "*i32", "*i64"

    def build(fn, params, constexprs):
        print(json.dumps(dataclasses.asdict(compile_sm90(fn, params, constexprs))), flush=True)

    stats = [("L", "*bf16"), ("stride_l", "i32"), ("V", "i32"), ("SCALE", f), ("THR", f), ("MAX", f), ("SUM", f),
             ("ENT", f), ("ARGMAX", i)]
    for thr, need_sum, ent in [(False, False, False), (True, True, False), (False, True, True)]:
        build(tk._row_stats_kernel, stats, dict(HAS_THR=thr, NEED_SUM=need_sum, NEED_ENT=ent, BLOCK=2048))
    walk = [("L", "*fp16"), ("stride_l", "i32"), ("V", "i32"), ("TOK", i), ("CU_NODES", i), ("CU_ROWS", i),
            ("FIRST", i), ("NEXT", i), ("TEMP", f), ("SCALE", f), ("THR", f), ("MAX", f), ("SUM", f), ("ENT", f),
            ("ARGMAX", i), ("Q", f), ("stride_q", "i32"), ("SCRATCH", f), ("SEED", l), ("OFFSET", l), ("U_HOOK", f),
            ("ACC_OUT", i), ("TOK_OUT", i), ("STATE", i), ("STATE_F", f), ("D", "i32"), ("eps", "fp32"),
            ("delta", "fp32")]
    for mode, q, thr, hook in [(0, False, False, False), (1, False, True, False), (1, True, True, True), (2, False, False, False)]:
        build(tk._walk_kernel, walk, dict(MODE=mode, HAS_Q=q, HAS_THR=thr, HOOK=hook, BLOCK=1024))
    race = [("L", "*bf16"), ("stride_l", "i32"), ("V", "i32"), ("TOK", i), ("CU_NODES", i), ("CU_ROWS", i),
            ("FIRST", i), ("NEXT", i), ("SCALE", f), ("THR", f), ("MAX", f), ("SUM", f), ("ARGMAX", i), ("Q", f),
            ("stride_q", "i32"), ("SCRATCH", f), ("SEED", l), ("OFFSET", l), ("E_HOOK", f), ("STATE", i),
            ("STATE_F", f), ("PART_KEY", f), ("PART_IDX", i), ("S", "i32")]
    for thr, q, hook in [(False, False, False), (True, True, True), (False, True, False)]:
        build(tk._race_kernel, race, dict(HAS_THR=thr, HAS_Q=q, HOOK=hook, CHUNK=4096, BLOCK=1024))
    fin = [("ARGMAX", i), ("STATE", i), ("PART_KEY", f), ("PART_IDX", i), ("S", "i32"), ("ACC_OUT", i),
           ("NUM_OUT", i), ("TOK_OUT", i), ("D", "i32")]
    build(tk._finalize_kernel, fin, dict(BLOCK_S=64, BLOCK_D=128))
