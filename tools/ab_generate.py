"""A/B speed check of `verispec.generate` between two checkouts, on one machine, in one run.

Each side runs in its own worker process with its own Python (a checkout's virtual environment, where
verispec is installed from that checkout); the workers load the model once and then decode the same
HumanEval prompts, alternating A, B, A, B per prompt, so a busy or throttling machine slows both alike.
Prints tokens/s of each side, the ratio B/A and whether every output is identical.

    python tools/ab_generate.py --a /path/to/old/.venv/bin/python --b .venv/bin/python \
        [--prompts 10] [--max-new-tokens 128] [--drafter retrieval] [--budget 4] [--out FILE]

A fixed ``--budget`` keeps both sides on the same draft size (the CLI default times the CPU each run,
and two runs can pick different sizes from noise). ``--cost auto`` sizes every step from the measured
forward cost, as the CLI and the demo do; ``--a-budget`` / ``--a-max-depth`` give side A its own
sizes (e.g. each side's demo configuration: before 2026-12-06 the demo ran the retrieval drafter at
32 / 12, after it the default drafter at its own defaults, ``--budget 0``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import torch
import verispec
from verispec.hf.loading import load_model
try:
    from verispec.cli.generate import make_drafter
except ImportError:  # checkouts before the cli package
    from verispec.generate_cli import make_drafter
try:
    from verispec.corpus import humaneval_prompts
except ImportError:
    from verispec.hf.corpus import humaneval_prompts
cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
model, tok = load_model("smollm2", device="cpu", dtype=torch.float32)
prompts = [tok(t).input_ids for t in humaneval_prompts(cfg["prompts"])]
def drafter():
    return make_drafter(cfg["drafter"], tok, None, cfg["budget"] or None, cfg["max_depth"], "cpu")
kw = {"cost": "auto"} if cfg["cost"] == "auto" else {}
verispec.generate(model, [prompts[0][:8]], drafter=drafter(), max_new_tokens=4, **kw)  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    i = int(line)
    t0 = time.perf_counter()
    out = verispec.generate(model, [prompts[i]], drafter=drafter(), max_new_tokens=cfg["max_new_tokens"], **kw)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "tokens": out.stats.new_tokens, "steps": out.stats.steps,
                      "output": out.sequences[0].tolist()}), flush=True)
"""


def _start(python: str, cfg: dict) -> subprocess.Popen:
    python = os.path.abspath(python) if os.sep in python else python  # the workers run in /
    p = subprocess.Popen([python, "-c", WORKER, json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd="/")
    line = p.stdout.readline()
    if line.strip() != "ready":
        raise SystemExit(f"worker {python} failed to start (exit {p.wait()})")
    return p


def _ask(p: subprocess.Popen, i: int) -> dict:
    p.stdin.write(f"{i}\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="Python of side A (e.g. the old checkout's .venv/bin/python)")
    ap.add_argument("--b", required=True, help="Python of side B")
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--drafter", default="retrieval", choices=("retrieval", "prompt-lookup", "none"))
    ap.add_argument("--budget", type=int, default=4, help="draft budget (0: the drafter's own default)")
    ap.add_argument("--max-depth", type=int, default=None)
    ap.add_argument("--a-budget", type=int, default=None, help="side A's budget (default: --budget)")
    ap.add_argument("--a-max-depth", type=int, default=None, help="side A's max depth (default: --max-depth)")
    ap.add_argument("--cost", default="none", choices=("none", "auto"), help="generate(cost=...) on both sides")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the prompts")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's choice)")
    ap.add_argument("--out", default=None, help="also write the summary (markdown) here")
    args = ap.parse_args(argv)
    cfg = dict(prompts=args.prompts, max_new_tokens=args.max_new_tokens, drafter=args.drafter, budget=args.budget,
               max_depth=args.max_depth, threads=args.threads, cost=args.cost)
    cfg_a = dict(cfg, budget=args.budget if args.a_budget is None else args.a_budget,
                 max_depth=args.max_depth if args.a_max_depth is None else args.a_max_depth)
    a, b = _start(args.a, cfg_a), _start(args.b, cfg)
    tot = {"A": [0.0, 0], "B": [0.0, 0]}
    same = 0
    for r in range(args.rounds):
        for i in range(args.prompts):
            order = (("A", a), ("B", b)) if (i + r) % 2 == 0 else (("B", b), ("A", a))
            res = {name: _ask(p, i) for name, p in order}
            for name in ("A", "B"):
                tot[name][0] += res[name]["seconds"]
                tot[name][1] += res[name]["tokens"]
            same += res["A"]["output"] == res["B"]["output"]
            print(f"prompt {i}: A {res['A']['tokens'] / res['A']['seconds']:.1f} tok/s, "
                  f"B {res['B']['tokens'] / res['B']['seconds']:.1f} tok/s", file=sys.stderr)
    for p in (a, b):
        p.stdin.close()
        p.wait()
    tps = {k: v[1] / v[0] for k, v in tot.items()}
    n = args.prompts * args.rounds
    summary = (f"{n} HumanEval prompts x {args.max_new_tokens} tokens, drafter {args.drafter}, budget/depth A "
               f"{cfg_a['budget']}/{cfg_a['max_depth']}, B {cfg['budget']}/{cfg['max_depth']}, cost {args.cost}: "
               f"A {tps['A']:.2f} tok/s, B {tps['B']:.2f} tok/s, B/A = {tps['B'] / tps['A']:.3f}; "
               f"identical outputs {same}/{n}")
    print(summary)
    if args.out:
        with open(args.out, "a") as f:
            f.write(summary + "\n")
    return 0 if same == n else 1


if __name__ == "__main__":
    sys.exit(main())
