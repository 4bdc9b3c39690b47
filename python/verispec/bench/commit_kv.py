"""KV commit benchmark inputs and implementations: move the accepted path's K/V behind the prefix in
every layer. verispec.commit_kv (Triton, CUDA: one launch for all layers; torch on CPU) beside the
obvious torch loop (one gather + scatter per layer and tensor, what HF-side code does today).

Caches are contiguous [B, Hkv, S, D] per layer (HF layout) or paged [blocks, 16, Hkv, D]. The bytes
that must move are 2 (read + write) x 2 (K, V) x layers x Hkv x (moved rows) x D x element size.
"""

from __future__ import annotations

import random
from typing import Callable

import torch

import verispec
from verispec.bench._common import Context, entry, failure

LAYERS, HKV, D, TREE = 32, 8, 128, 64

def make_case(B: int, P: int, L: int, device, dtype=torch.bfloat16, layers: int = LAYERS, hkv: int = HKV,
              d: int = D, paged: bool = False, seed: int = 0):
    rng = random.Random(seed)
    S = L + TREE
    rows = torch.full((B, P), -1, dtype=torch.int32)
    moved = 0
    for b in range(B):
        path = [0] + sorted(rng.sample(range(1, TREE), P - 1))
        rows[b, :P] = torch.tensor(path, dtype=torch.int32)
        moved += sum(1 for i, r in enumerate(path) if r != i)
    if paged:
        page = 16
        per = (S + page - 1) // page
        table = torch.randperm(B * per, generator=torch.Generator().manual_seed(seed)).view(B, per).to(torch.int32)
        shape = (B * per, page, hkv, d)
    else:
        table, shape = None, (B, hkv, S, d)
    # Drawn on the device: 64 Llama-sized caches are ~10^10 numbers, minutes of CPU randn per shape.
    g = torch.Generator(device=device).manual_seed(seed)
    ks = [torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(layers)]
    vs = [torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(layers)]
    pl = torch.full((B,), L, dtype=torch.int32, device=device)
    nbytes = 2 * 2 * layers * moved * hkv * d * ks[0].element_size()
    return ks, vs, pl, rows.to(device), (table.to(device) if table is not None else None), nbytes


def torch_loop(ks, vs, pl, rows, table):
    """The per-layer baseline: index gather + scatter per tensor (contiguous layout only)."""
    B, P = rows.shape
    valid = rows >= 0
    b_idx = torch.arange(B, device=rows.device).view(-1, 1).expand(B, P)[valid]
    src = (pl.view(-1, 1) + rows)[valid].long()
    dst = (pl.view(-1, 1) + torch.arange(P, device=rows.device).view(1, -1))[valid].long()

    def run():
        for c in ks + vs:
            c[b_idx, :, dst] = c[b_idx, :, src]

    return run


def check_backends(device, backends=("triton", "cuda")) -> dict[str, str]:
    """Each backend against the torch reference on small caches (both layouts), exact equality."""
    report = {}
    for be in backends:
        try:
            for paged in (False, True):
                ref = make_case(4, 8, 300, device, layers=4, paged=paged, seed=11)
                got = make_case(4, 8, 300, device, layers=4, paged=paged, seed=11)
                want_lens = verispec.commit_kv(ref[0], ref[1], ref[2], ref[3], block_table=ref[4], backend="torch")
                lens = verispec.commit_kv(got[0], got[1], got[2], got[3], block_table=got[4], backend=be)
                same = torch.equal(lens.cpu(), want_lens.cpu()) and all(
                    torch.equal(x, y) for x, y in zip(got[0] + got[1], ref[0] + ref[1]))
                if not same:
                    raise AssertionError(f"{'paged' if paged else 'contiguous'} caches differ from the reference")
            report[be] = "ok"
        except Exception as exc:
            report[be] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return report


def shapes(gpu: bool, quick: bool) -> list[tuple[int, int, bool]]:
    """(B, P, paged) triples."""
    if gpu:
        if quick:
            return [(8, 8, False), (32, 16, True)]
        return [(B, P, paged) for B in (1, 8, 32) for P in (1, 4, 8, 16) for paged in (False, True)]
    return [(4, 8, False), (4, 8, True)] if quick else [(B, P, paged) for B in (1, 4) for P in (4, 16)
                                                          for paged in (False, True)]


def _commit(backend: str, ks, vs, pl, rows, table) -> Callable:
    return lambda: verispec.commit_kv(ks, vs, pl, rows, block_table=table, backend=backend)


def run(ctx: Context) -> dict:
    # CPU: 8 layers and a 512-token prefix keep the caches near 100 MB on a shared machine.
    dims = dict(L=4096) if ctx.gpu else dict(L=512, layers=8)
    backends = ("triton", "cuda") if ctx.gpu else ("torch",)
    bw = ctx.bandwidth
    checks = check_backends(ctx.device, backends)
    rows = []
    for B, P, paged in shapes(ctx.gpu, ctx.quick):
        ks, vs, pl, rows_t, table, nbytes = make_case(B, P, dims["L"], ctx.device, layers=dims.get("layers", LAYERS),
                                                       paged=paged)
        floor_ms = nbytes / (bw * 1e9) * 1e3
        row = {"shape": f"B={B} P={P} {'paged' if paged else 'contiguous'}",
               "params": {"B": B, "P": P, "layout": "paged" if paged else "contiguous"},
               "floor_ms": floor_ms, "impls": {}}
        impls: dict[str, Callable] = {}
        for be in backends:
            if checks.get(be) != "ok":
                row["impls"][f"verispec {be}"] = {"error": f"wrong or failing: {checks.get(be)}"}
                continue
            impls[f"verispec {be}"] = _commit(be, ks, vs, pl, rows_t, table)
        if not paged:
            impls["torch loop"] = torch_loop(ks, vs, pl, rows_t, table)
        for name, fn in impls.items():
            try:  # repeated calls move the same rows again: the contents change, the work does not
                row["impls"][name] = entry(ctx.time(fn), floor_ms)
            except Exception as exc:
                row["impls"][name] = failure(exc)
        rows.append(row)
        ctx.log(f"commit_kv {row['shape']}: " + ", ".join(
            f"{n} {e['ms']:.3f} ms" for n, e in row["impls"].items() if "ms" in e))
        del ks, vs
    layers = dims.get("layers", LAYERS)
    return {"op": "commit_kv", "rows": rows, "correctness": checks,
            "floor": "read and write the moved K/V rows once at the measured copy bandwidth",
            "notes": [f"{layers} layers, Hkv={HKV}, D={D}, bf16, L={dims['L']}, paths drawn from a {TREE}-node tree"]}
