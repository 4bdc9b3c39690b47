"""Acceptance (verify) benchmark: time against the floor, the torch backend and FlashInfer's chain kernel.

Shapes: B in {1, 8, 64, 256} requests, K in {4, 8, 16, 64} draft nodes per request, V in {32000, 128256,
151936}, bf16 target logits ``[B * (K + 1), V]``. Cases:

* ``greedy``  - chains of K nodes, greedy acceptance;
* ``exact_chain`` - chains drafted by a draft model (``draft_probs`` float32 ``[B*K, V]``), temperature 1,
  the workload of FlashInfer's ``chain_speculative_sampling``, which is timed on the same inputs
  (its kernel takes float32 probabilities, so it is timed both from given probabilities and including the
  softmax of the target logits a caller must run first);
* ``exact_tree`` - deterministic drafts (retrieval): four chains of K/4 nodes under the root.

The floor is the time to read the target logits once: ``R * V * 2`` bytes at the copy bandwidth measured
in the same run. On a CPU the benchmark runs once at tiny sizes to check that it works and that the
backends agree (no timings are meaningful there).

Usage::

    python bench/bench_verify.py [--quick]   # GPU sweep, writes bench/results/verify-*.json
    pytest bench/bench_verify.py              # pytest-benchmark; CPU: one correctness round
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import _gpu_common as common  # noqa: E402
import pytest  # noqa: E402

from verispec.bench.verify import BS, CASES, KS, VS, make_case, run_flashinfer, run_verispec  # noqa: E402

pytestmark = pytest.mark.op("verify")

GPU = torch.cuda.is_available()
def copy_bandwidth() -> float:
    from triton.testing import do_bench

    return common.copy_bandwidth("cuda", timer=lambda fn: do_bench(fn, return_mode="median"))


def sweep(out_dir: Path, quick: bool) -> dict:
    """GPU sweep with triton.testing.do_bench (median of CUDA-event timings); writes JSON."""
    from triton.testing import do_bench

    name, _ = common.device_info("cuda")
    bw = copy_bandwidth()
    common.announce_device(name, bw)
    shapes = [(c, 64, 4, 128256) for c in CASES] + [("greedy", 1, 4, 32000), ("exact_chain", 256, 16, 151936)] \
        if quick else [(c, B, K, V) for c in CASES for B in BS for K in KS for V in VS]
    rows = []
    result = {**common.result_header("verify", name, bw), "logits": "bf16", "rows": rows}
    stem = common.result_stem(out_dir, result, minutes=False)
    for case, B, K, V in shapes:
        R = B * (K + 1)
        if R * V * 2 > 12 * 2**30:  # keep the inputs (and FlashInfer's float32 copies) in memory
            continue
        c = make_case(case, B, K, V, "cuda")
        floor_ms = R * V * 2 / (bw * 1e9) * 1e3
        impls: dict[str, Optional[Callable]] = {f"verispec_{be}": run_verispec(c, be) for be in ("cuda", "triton")}
        if R * V <= 2**27:  # the torch backend materialises float32 [R, V] tensors
            impls["verispec_torch"] = run_verispec(c, "torch")
        if case == "exact_chain":
            impls["flashinfer_chain"] = run_flashinfer(c, include_softmax=False)
            impls["flashinfer_chain+softmax"] = run_flashinfer(c, include_softmax=True)
        row = {"case": case, "B": B, "K": K, "V": V, "floor_ms": floor_ms, "impls": {}}
        for name, fn in impls.items():
            if fn is None:
                continue
            try:
                ms = float(do_bench(fn, warmup=10, rep=50, return_mode="median"))
                row["impls"][name] = {"ms": ms, "x_floor": ms / floor_ms}
            except Exception as exc:
                row["impls"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        common.write_json(stem, result)  # after every shape: a sweep cut short keeps what it measured
        del c
        torch.cuda.empty_cache()
    common.write_json(stem, result)
    print(f"wrote {stem}.json")
    return result


# ---- pytest-benchmark ------------------------------------------------------------------------------

if GPU:
    PARAMS = [(c, B, K, V) for c in CASES for B in BS for K in KS for V in VS if B * (K + 1) * V * 2 <= 12 * 2**30]
    BENCH_BACKENDS = ("cuda", "triton", "torch")
else:  # one correctness round at tiny sizes
    PARAMS = [(c, 3, 4, 111) for c in CASES]
    BENCH_BACKENDS = ("torch", "triton")


@pytest.mark.parametrize("backend", BENCH_BACKENDS)
@pytest.mark.parametrize("case,B,K,V", PARAMS)
def test_bench_verify(benchmark, case, B, K, V, backend):
    dev = "cuda" if GPU else "cpu"
    if backend == "torch" and B * (K + 1) * V > 2**27:
        pytest.skip("the torch backend materialises float32 [R, V]: too large")
    c = make_case(case, B, K, V, dev, dtype=torch.bfloat16 if GPU else torch.float32)
    fn = run_verispec(c, backend)
    ref = run_verispec(c, "torch")() if B * (K + 1) * V <= 2**27 else None
    if GPU:
        def timed():
            out = fn()
            torch.cuda.synchronize()
            return out

        out = benchmark.pedantic(timed, rounds=20, iterations=1, warmup_rounds=3)
        benchmark.extra_info["floor_ms"] = B * (K + 1) * V * 2 / (copy_bandwidth_cached() * 1e9) * 1e3
    else:
        out = benchmark.pedantic(fn, rounds=1, iterations=1)
    if ref is not None:
        assert torch.equal(out.tokens.cpu(), ref.tokens.cpu()), f"{backend} disagrees with the torch backend"
    assert out.tokens.shape == (B, c["max_depth"] + 1)


_BW: list[float] = []


def copy_bandwidth_cached() -> float:
    if not _BW:
        _BW.append(copy_bandwidth())
    return _BW[0]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a handful of shapes, including the target B=64 K=4 V=128k")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    if not GPU:
        return pytest.main([__file__, "-q", "--benchmark-disable"])
    sweep(args.out, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
