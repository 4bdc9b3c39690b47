"""KV commit benchmark: move the accepted path's K/V behind the prefix in all 32 layers of Llama-3-8B.

verispec.commit_kv (Triton, CUDA: one launch for all layers) beside the obvious torch loop (one
gather + scatter per layer and tensor, what HF-side code does today). Caches are contiguous
[B, 8, S, 128] bf16 per layer (HF layout) or paged [blocks, 16, 8, 128]; B in {1, 8, 32}, accepted
path length P in {1, 4, 8, 16} rows (the root plus P - 1 nodes), sources spread over a 64-row tree.
The bytes that must move are 2 (read + write) x 2 (K, V) x layers x B x Hkv x (moved rows) x D x 2.

Usage::

    python bench/bench_commit_kv.py            # on a GPU; writes bench/results/
    python bench/bench_commit_kv.py --cpu-check
    pytest bench/bench_commit_kv.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import verispec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
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
    g = torch.Generator().manual_seed(seed)
    ks = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(layers)]
    vs = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(layers)]
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


def commit_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_gpu(out_dir: Path, quick: bool) -> dict:
    from triton.testing import do_bench

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    src = torch.empty(1 << 29, dtype=torch.int16, device=device)
    dst = torch.empty_like(src)
    bw = 2 * src.numel() * 2 / (do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3) / 1e9
    print(f"device: {props.name}, measured copy bandwidth {bw:.0f} GB/s")
    rows_out = []
    shapes = [(8, 8, False), (32, 16, True)] if quick else [
        (B, P, paged) for B in (1, 8, 32) for P in (1, 4, 8, 16) for paged in (False, True)]
    for B, P, paged in shapes:
        ks, vs, pl, rows, table, nbytes = make_case(B, P, 4096, device, paged=paged)
        row = {"B": B, "P": P, "layout": "paged" if paged else "contiguous", "bytes": nbytes, "impls": {}}
        impls: dict[str, Callable] = {
            f"verispec_{be}": (lambda be=be, ks=ks, vs=vs, pl=pl, rows=rows, table=table:
                               verispec.commit_kv(ks, vs, pl, rows, block_table=table, backend=be))
            for be in ("triton", "cuda")
        }
        if not paged:
            impls["torch_loop"] = torch_loop(ks, vs, pl, rows, table)
        for name, fn in impls.items():
            try:
                # Repeated calls move the same rows again: the cache contents change, the work does not.
                ms = float(do_bench(fn, warmup=5, rep=50, return_mode="median"))
                gbs = nbytes / (ms * 1e-3) / 1e9
                row["impls"][name] = {"ms": ms, "GBps": gbs, "pct_copy_bw": 100 * gbs / bw}
            except Exception as exc:
                row["impls"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        rows_out.append(row)
        print(row, flush=True)
    result = {"bench": "commit_kv", "device": props.name, "copy_bandwidth_GBps": bw, "commit": commit_hash(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "shape": f"{LAYERS} layers, Hkv={HKV}, D={D}, bf16, L=4096",
              "rows": rows_out}
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"commit_kv-{props.name.replace(' ', '_')}-{result['date'][:10]}-{result['commit']}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out_dir / stem}.json")
    return result


def cpu_check() -> list[str]:
    """Every backend that runs on CPU, at tiny sizes, against the torch loop; all layouts."""
    report = []
    for B, P, paged in [(2, 3, False), (3, 5, True)]:
        base = make_case(B, P, 9, "cpu", dtype=torch.float32, layers=2, hkv=2, d=8, paged=paged)
        want = None
        for backend in ("torch", "triton"):
            ks, vs, pl, rows, table, _ = make_case(B, P, 9, "cpu", dtype=torch.float32, layers=2, hkv=2, d=8,
                                                   paged=paged)
            lens = verispec.commit_kv(ks, vs, pl, rows, block_table=table, backend=backend)
            if want is None:
                want = (ks, vs, lens)
                if not paged:  # the independent loop agrees with the reference
                    bk, bv, bpl, brows, _, _ = base
                    torch_loop(bk, bv, bpl, brows, None)()
                    assert all(torch.equal(a, b) for a, b in zip(bk + bv, ks + vs)), "torch loop disagrees"
            else:
                assert torch.equal(lens, want[2]), f"{backend}: lengths differ"
                assert all(torch.equal(a, b) for a, b in zip(ks + vs, want[0] + want[1])), f"{backend}: caches differ"
            report.append(f"B={B} P={P} {'paged' if paged else 'contiguous'} {backend}: ok")
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cpu-check", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.cpu_check or not torch.cuda.is_available():
        print("\n".join(cpu_check()))
        print("CPU check passed (no timings on CPU)")
        return 0
    run_gpu(args.out, args.quick)
    return 0


def test_cpu_check():
    assert cpu_check()


if __name__ == "__main__":
    sys.exit(main())
