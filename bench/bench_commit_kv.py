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
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import _gpu_common as common  # noqa: E402

import verispec  # noqa: E402
from verispec.bench.commit_kv import HKV, LAYERS, D, check_backends, make_case, torch_loop  # noqa: E402

pytestmark = pytest.mark.op("commit_kv")

def run_gpu(out_dir: Path, quick: bool, *, device=None, timer=None, bandwidth=None, shapes=None,
            dims=None) -> dict:
    """Time each backend on each shape after checking it against the reference; ``device``/``timer``/
    ``bandwidth``/``shapes``/``dims`` let the tests drive the bookkeeping on CPU."""
    device = torch.device("cuda") if device is None else torch.device(device)
    dims = dims or {}
    if timer is None:
        from triton.testing import do_bench

        def timer(fn):
            return float(do_bench(fn, warmup=5, rep=50, return_mode="median"))

    name, _ = common.device_info(device)
    bw = common.copy_bandwidth(device, timer=timer) if bandwidth is None else bandwidth
    common.announce_device(name, bw)
    backends = ("triton", "cuda") if device.type == "cuda" else ("triton",)
    checks = check_backends(device, backends)
    print(f"correctness against the torch reference: {checks}")
    rows_out = []
    result = {**common.result_header("commit_kv", name, bw),
              "shape": f"{LAYERS} layers, Hkv={HKV}, D={D}, bf16, L=4096",
              "correctness": checks, "rows": rows_out}
    stem = common.result_stem(out_dir, result)
    if shapes is None:
        shapes = [(8, 8, False), (32, 16, True)] if quick else [
            (B, P, paged) for B in (1, 8, 32) for P in (1, 4, 8, 16) for paged in (False, True)]
    for B, P, paged in shapes:
        ks, vs, pl, rows, table, nbytes = make_case(B, P, dims.get("L", 4096), device, paged=paged,
                                                     **{k: v for k, v in dims.items() if k != "L"})
        row = {"B": B, "P": P, "layout": "paged" if paged else "contiguous", "bytes": nbytes, "impls": {}}
        impls: dict[str, Callable] = {
            f"verispec_{be}": (lambda be=be, ks=ks, vs=vs, pl=pl, rows=rows, table=table:
                               verispec.commit_kv(ks, vs, pl, rows, block_table=table, backend=be))
            for be in backends if checks.get(be) == "ok"
        }
        if not paged:
            impls["torch_loop"] = torch_loop(ks, vs, pl, rows, table)
        for impl, fn in impls.items():
            try:
                # Repeated calls move the same rows again: the cache contents change, the work does not.
                ms = timer(fn)
                gbs = nbytes / (ms * 1e-3) / 1e9
                row["impls"][impl] = {"ms": ms, "GBps": gbs, "pct_copy_bw": 100 * gbs / bw}
            except Exception as exc:
                row["impls"][impl] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        rows_out.append(row)
        print(row, flush=True)
        common.write_json(stem, result)  # after every shape: a sweep cut short keeps what it measured
        del ks, vs
    common.write_json(stem, result)
    print(f"wrote {stem}.json")
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
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    if args.cpu_check or not torch.cuda.is_available():
        print("\n".join(cpu_check()))
        print("CPU check passed (no timings on CPU)")
        return 0
    run_gpu(args.out, args.quick)
    return 0


def test_cpu_check():
    assert cpu_check()


def test_report_pipeline_on_cpu(tmp_path):
    res = run_gpu(tmp_path, False, device="cpu", timer=common.wall_timer, bandwidth=1.0,
                  shapes=[(2, 4, False), (2, 3, True)],
                  dims=dict(L=20, layers=2, hkv=2, d=8, dtype=torch.float32))
    assert res["correctness"] == {"triton": "ok"}
    assert set(res["rows"][0]["impls"]) == {"verispec_triton", "torch_loop"}
    assert "ms" in res["rows"][1]["impls"]["verispec_triton"]
    assert len(list(tmp_path.glob("commit_kv-*.json"))) == 1


if __name__ == "__main__":
    sys.exit(main())
