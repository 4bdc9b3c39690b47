"""Speculative edits: a model rewrites a function with a small change; the original is the prediction.

Tasks come from the local Python standard library: top-level functions and classes of ``--min-lines``
to ``--max-lines`` lines (at most one per file, files in sorted order, so every machine with the same
Python builds the same tasks), each with one of five instructions (add type hints, rename a variable,
add docstrings, fix a marked bug, add logging). The chat prompt holds the instruction and the code;
the prediction is the code block as the answer would quote it. SmolLM2-135M-Instruct (offline GGUF)
by default, greedy, ``max_new_tokens`` = 1.3 x the code's tokens + 64 (room for the whole rewrite).

Methods, alternating per task (a busy machine slows all of them alike), after one warm-up:

* HF greedy (``model.generate(do_sample=False)``), the reference every output is compared with;
* HF prompt lookup at ``prompt_lookup_num_tokens`` 10, 20 and 40 (the table shows 10 and the best of
  the three per task);
* verispec with the prediction (`verispec.generate(..., prediction=...)`).

Reports tokens/s, tokens per model forward, speedups, accepted/rejected prediction tokens and whether
each output is token-identical to HF greedy. ``--out`` writes markdown with machine, commit and date::

    nice -n 5 python bench/bench_edits.py --out bench/results/edits_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--min-lines", type=int, default=40)
    ap.add_argument("--max-lines", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="cap per task (default 1.3 x code + 64)")
    ap.add_argument("--lookups", default="10,20,40", help="HF prompt_lookup_num_tokens values")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="2 tasks, at most 48 new tokens (correctness pass)")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.max_new_tokens = 2, 48
    if args.threads:
        torch.set_num_threads(args.threads)
    lookups = [int(x) for x in args.lookups.split(",")]

    import verispec
    from verispec.corpus import edit_prompt, edit_tasks
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    model, tok = load_model(args.model, device=args.device)
    dev_type = torch.device(args.device).type
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tasks = edit_tasks(args.tasks, args.min_lines, args.max_lines)

    def sync():
        if dev_type == "cuda":
            torch.cuda.synchronize()

    def hf(p, n, **kw):
        out, dt, calls = hf_generate(model, p, n, pad_token_id=pad, **kw)
        return out[len(p):], dt, calls

    def vs(p, pred, n):
        sync()
        t = time.perf_counter()
        r = verispec.generate(model, [p], prediction=[pred], max_new_tokens=n, cost="auto")
        sync()
        return r.sequences[0].tolist()[len(p):], time.perf_counter() - t, r

    def prompt_of(task):
        return edit_prompt(tok, task.instruction, task.code)

    p0, pr0 = prompt_of(tasks[0])
    hf(p0, 8)  # warm-up
    vs(p0, pr0, 8)

    rows = []
    for i, task in enumerate(tasks):
        p, pred = prompt_of(task)
        n = args.max_new_tokens or int(1.3 * len(pred)) + 64
        ref, t_hf, s_hf = hf(p, n)
        look = {}
        for k in lookups:
            out, dt, st = hf(p, n, prompt_lookup_num_tokens=k)
            look[k] = (dt, st, out == ref)
        out, dt, res = vs(p, pred, n)
        st = res.stats
        row = dict(task=task, prompt=len(p), pred=len(pred), new=len(ref), hf=(t_hf, s_hf), look=look,
                   vs=(dt, st.steps, out == ref, res.accepted_prediction_tokens[0], res.rejected_prediction_tokens[0]))
        rows.append(row)
        best = min(look, key=lambda k: look[k][0])
        print(f"{i + 1}/{len(tasks)} {task.name} ({task.kind}): {len(ref)} tokens; HF {len(ref) / t_hf:.1f} tok/s, "
              f"lookup10 {len(ref) / look[10][0]:.1f}, best lookup ({best}) {len(ref) / look[best][0]:.1f}, "
              f"verispec {len(ref) / dt:.1f} tok/s {st.tokens_per_step:.2f} tok/step, acc/rej "
              f"{row['vs'][3]}/{row['vs'][4]}, {'identical' if out == ref else 'DIFFERENT'}",
              file=sys.stderr, flush=True)
        if args.out:  # after every task: a long run that dies still leaves its table
            with open(args.out, "w") as fh:
                fh.write("# Speculative edits benchmark (bench/bench_edits.py)\n\n" + report(rows, lookups, model, args)
                         + ("\n" if i + 1 == len(tasks) else f"\n\n(partial: {i + 1} of {len(tasks)} tasks)\n"))

    text = report(rows, lookups, model, args)
    print(text)
    ok = all(r["vs"][2] for r in rows)
    return 0 if ok else 1


def report(rows, lookups, model, args) -> str:
    tokens = sum(r["new"] for r in rows)
    t_hf = sum(r["hf"][0] for r in rows)
    s_hf = sum(r["hf"][1] for r in rows)
    t_l10 = sum(r["look"][10][0] for r in rows)
    s_l10 = sum(r["look"][10][1] for r in rows)
    best = [min(r["look"], key=lambda k, r=r: r["look"][k][0]) for r in rows]
    t_lb = sum(r["look"][k][0] for r, k in zip(rows, best))
    s_lb = sum(r["look"][k][1] for r, k in zip(rows, best))
    t_vs = sum(r["vs"][0] for r in rows)
    s_vs = sum(r["vs"][1] for r in rows)
    acc = sum(r["vs"][3] for r in rows)
    rej = sum(r["vs"][4] for r in rows)
    same_l10 = sum(r["look"][10][2] for r in rows)
    same_lb = sum(r["look"][k][2] for r, k in zip(rows, best))
    same_vs = sum(r["vs"][2] for r in rows)
    n = len(rows)
    base = tokens / t_hf
    from verispec.bench._common import commit_hash, cpu_name

    commit, cpu = commit_hash(), cpu_name()
    lines = [
        f"- machine: {cpu}, {os.cpu_count()} CPUs visible, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), device {args.device}; load average {os.getloadavg()[0]:.1f} when the table was written (a machine "
        f"shared with other jobs: every method alternates per task, so all see the same load)",
        f"- model: {type(model).__name__} ({args.model}, {model.dtype}); greedy",
        f"- commit {commit}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {n} tasks "
        f"({args.min_lines}-{args.max_lines} line stdlib functions/classes), {tokens} new tokens in all",
        "",
        "| method | tokens/s | tokens/step | vs HF greedy | vs HF lookup 10 | identical to greedy |",
        "|---|---:|---:|---:|---:|---|",
        f"| HF generate (greedy) | {base:.1f} | {tokens / s_hf:.2f} | 1.00x | {t_l10 / t_hf:.2f}x | reference |",
        f"| HF prompt lookup 10 | {tokens / t_l10:.1f} | {tokens / s_l10:.2f} | {t_hf / t_l10:.2f}x | 1.00x | "
        f"{same_l10}/{n} |",
        f"| HF prompt lookup, best of {{{','.join(map(str, lookups))}}} per task | {tokens / t_lb:.1f} | "
        f"{tokens / s_lb:.2f} | {t_hf / t_lb:.2f}x | {t_l10 / t_lb:.2f}x | {same_lb}/{n} |",
        f"| verispec, prediction | {tokens / t_vs:.1f} | {tokens / s_vs:.2f} | {t_hf / t_vs:.2f}x | "
        f"{t_l10 / t_vs:.2f}x | {same_vs}/{n} |",
        "",
        f"verispec vs best HF prompt lookup: {t_lb / t_vs:.2f}x. Prediction tokens: {acc} accepted, {rej} rejected.",
        "",
        "| task | instruction | prompt | new tokens | HF tok/s | lookup 10 | best lookup | verispec tok/s | tok/step "
        "| accepted / rejected | identical |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r, k in zip(rows, best):
        nn = r["new"]
        t = r["task"]
        lines.append(
            f"| {t.name} | {t.kind} | {r['prompt']} | {nn} | {nn / r['hf'][0]:.1f} | {nn / r['look'][10][0]:.1f} | "
            f"{nn / r['look'][k][0]:.1f} ({k}) | {nn / r['vs'][0]:.1f} | {nn / max(r['vs'][1], 1):.2f} | "
            f"{r['vs'][3]} / {r['vs'][4]} | {'yes' if r['vs'][2] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
