"""``verispec bench``: the benchmark suite on the device present, one markdown table per op (ours
beside every installed peer), optionally a JSON record, PNG plots and a regression check against an
earlier record. Cheap to import: torch and the suite load only when the command runs."""

from __future__ import annotations

import argparse
import sys
import time

OPS = ("datastore", "verify", "tree_attention", "commit_kv", "generate")


def _run(args: argparse.Namespace) -> int:
    if args.tolerance < 0:
        raise ValueError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.plot:
        from verispec.bench.report import require_matplotlib

        require_matplotlib()  # fail before minutes of benchmarking, not after
    baseline = None
    if args.baseline:
        from verispec.bench.report import load_baseline

        baseline = load_baseline(args.baseline)

    import torch

    if not torch.cuda.is_available():  # verispec's Triton paths need the interpreter on a CPU
        import os

        os.environ.setdefault("TRITON_INTERPRET", "1")
    from verispec.bench._common import Context, write_json
    from verispec.bench.report import baseline_warnings, compare, markdown, plot, run_suite

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here")
    ops = list(OPS) if args.op == "all" else [args.op]
    t0 = time.perf_counter()
    result = run_suite(ops, Context(torch.device(device), quick=args.quick))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(result))
    print(f"({result['wall_s']:.0f} s)")
    status = 1 if any("error" in r for r in result["ops"].values()) else 0
    if baseline is not None:
        for w in baseline_warnings(result, baseline):
            print(f"note: {w}")
        flags = compare(result, baseline, args.tolerance)
        result["regressions"] = flags
        print(f"\nRegressions against {args.baseline}: " + ("none" if not flags else f"{len(flags)}"))
        for f in flags:
            print(f"- REGRESSION {f}")
        status = status or (1 if flags else 0)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        for p in plot(result, args.plot):
            print(f"wrote {p}", file=sys.stderr)
    return status


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark every op on this device beside the installed peers",
        description="Run verispec's benchmarks on the device present and print one markdown table per op. "
                    "Exit status 1 when an op failed or a regression was flagged, 2 on bad arguments.")
    p.add_argument("--op", default="all", choices=(*OPS, "all"), help="which benchmark (default: all)")
    p.add_argument("--quick", action="store_true", help="a few shapes per op (minutes on a CPU)")
    p.add_argument("--json", metavar="FILE", help="write the results (device, versions, commit, date) as JSON")
    p.add_argument("--plot", metavar="DIR", help="write one PNG per op into DIR (needs matplotlib)")
    p.add_argument("--baseline", metavar="FILE", help="a --json file of an earlier run: flag verispec rows "
                                                      "whose median is slower by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="allowed slow-down against --baseline, as a fraction (default 0.10)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 gives steadier numbers on a shared machine)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    p.set_defaults(func=_run)
