"""Replay greedy outputs through drafters, without the model: tune drafters in seconds, not hours.

Greedy verification accepts the longest tree path that agrees with the model's greedy output, so once
that output is known (HF greedy, cached in ``--refs``), any drafter can be replayed against it exactly:
tokens per step are what `verispec.generate` would get. Time is estimated in one-row forwards from a
cost curve (``--cost measured``: this machine's `verispec.cost.measure_forward_cost`, or ``T:c,...``),
with the same `AdaptiveSizer` that ``generate(..., cost=...)`` runs; HF prompt lookup (10 tokens, its
earliest-match rule) is replayed the same way for comparison. Drafter overhead is not counted.

    python tools/replay_drafters.py --set humaneval --n 10 --drafters hf,default,edits,retrieval
    python tools/replay_drafters.py --set edits --n 5 --drafters hf,edits,default

Drafters: ``hf`` (HF prompt lookup, 10 tokens), ``default`` (the CLI's ``--drafter retrieval``),
``edits`` (`SpeculativeEditsDrafter`, the prompt or the task's prediction), ``retrieval`` (the previous
default: `RetrievalDrafter(budget=32, max_depth=12)` with prompt lookup), ``prompt-lookup``
(`PromptLookupDrafter(num_tokens=10)`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def accept(tree, target: list[int]) -> int:
    toks, par = tree.tokens.tolist(), tree.parents.tolist()
    node, k = -1, 0
    while k < len(target):
        nxt = next((i for i, (t, p) in enumerate(zip(toks, par)) if p == node and t == target[k]), None)
        if nxt is None:
            break
        node, k = nxt, k + 1
    return k


def hf_lookup(seq: list[int], num: int = 10, max_ngram: int = 2) -> list[int]:
    """transformers' PromptLookupCandidateGenerator: the earliest match of the longest suffix (<= 2 tokens)."""
    for n in range(max_ngram, 0, -1):
        if len(seq) <= n:
            continue
        pat = seq[-n:]
        for s in range(len(seq) - n):
            if seq[s : s + n] == pat and seq[s + n : s + n + num]:
                return seq[s + n : s + n + num]
    return []


def replay(drafter, prompt: list[int], ref: list[int], cost, prediction=None) -> tuple[int, float]:
    """(steps, cost in one-row forwards) to emit ``ref`` after ``prompt``."""
    from verispec.cost import AdaptiveSizer
    from verispec.drafters import Accepted, Context, PredictionFirst, SpeculativeEditsDrafter

    sizer = None
    if drafter != "hf":
        sizer = AdaptiveSizer(cost, calibrate=not getattr(drafter, "calibrated", False))
        if prediction is not None and isinstance(drafter, (PredictionFirst, SpeculativeEditsDrafter)):
            edits = drafter.edits if isinstance(drafter, PredictionFirst) else drafter
            edits.predictions = [prediction]
        drafter.begin([prompt])
    seq, total, steps = list(prompt), 0.0, 0
    while len(seq) - len(prompt) < len(ref):
        done = len(seq) - len(prompt)
        if drafter == "hf":
            cand = hf_lookup(seq)
            k = next((i for i, (a, b) in enumerate(zip(cand, ref[done:])) if a != b), min(len(cand), len(ref) - done))
            rows = 1 + len(cand)
        else:
            tree = sizer.size([0], drafter.propose([Context(0, seq)]))[0]
            k, rows = accept(tree, ref[done:]), 1 + len(tree)
        new = ref[done : done + k + 1]
        seq.extend(new)
        c = cost(rows)
        total, steps = total + c, steps + 1
        if drafter != "hf":
            drafter.update([Accepted(0, new, k, len(seq) - len(prompt) >= len(ref))])
            sizer.observe([0], [new[:k]], rows, c)
    return steps, total


def make(name: str, tok):
    from verispec import PromptLookupDrafter, RetrievalDrafter, SpeculativeEditsDrafter
    from verispec.cli.generate import make_drafter
    from verispec.corpus import stdlib_datastore

    if name == "hf":
        return "hf"
    if name == "default":
        return make_drafter("retrieval", tok, None, None, None, "cpu")
    if name == "edits":
        return SpeculativeEditsDrafter()
    if name == "retrieval":
        return RetrievalDrafter(stdlib_datastore(tok), budget=32, max_depth=12)
    if name == "prompt-lookup":
        return PromptLookupDrafter(num_tokens=10, budget=10)
    raise SystemExit(f"unknown drafter {name!r}")


def workload(name: str, n: int, tok) -> list[tuple[str, list[int], int, object]]:
    """(key, prompt, max_new_tokens, prediction) per item."""
    from verispec.corpus import edit_prompt, edit_tasks, humaneval_prompts, mtbench_questions

    if name == "humaneval":
        return [(f"he{i}", tok(t).input_ids, 128, None) for i, t in enumerate(humaneval_prompts(n))]
    if name == "mtbench":
        out = []
        for i, q in enumerate(mtbench_questions(n)):
            ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
            out.append((f"mt{i}", list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids), 128, None))
        return out
    out = []
    for t in edit_tasks(n):
        p, pred = edit_prompt(tok, t.instruction, t.code)
        out.append((t.name, p, int(1.3 * len(pred)) + 64, pred))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="humaneval", choices=("humaneval", "mtbench", "edits"))
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--drafters", default="hf,default,edits")
    ap.add_argument("--cost", default="measured", help="'measured' or T:cost,... (e.g. 1:1,2:1.4,64:4.9)")
    ap.add_argument("--refs", default=os.path.expanduser("~/.cache/verispec/replay-refs.json"),
                    help="greedy outputs, computed once with HF greedy and cached here")
    args = ap.parse_args(argv)

    import torch

    from verispec.cost import _Interpolated, measure_forward_cost
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    torch.set_num_threads(1)
    model, tok = load_model("smollm2", device="cpu")
    if args.cost == "measured":
        cost = measure_forward_cost(model)
    else:
        cost = _Interpolated([(int(a), float(b)) for a, b in (x.split(":") for x in args.cost.split(","))])
    print(f"cost curve: {cost!r}", file=sys.stderr)
    refs = {}
    if os.path.exists(args.refs):
        with open(args.refs) as fh:
            refs = json.load(fh)
    items = workload(args.set, args.n, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for key, p, n, _ in items:
        if f"{key}:{n}" not in refs:
            out, _, _ = hf_generate(model, p, n, pad_token_id=pad)
            refs[f"{key}:{n}"] = out[len(p):]
            os.makedirs(os.path.dirname(args.refs), exist_ok=True)
            with open(args.refs + ".tmp", "w") as fh:
                json.dump(refs, fh)
            os.replace(args.refs + ".tmp", args.refs)
    print(f"{args.set}, {len(items)} items; estimated speedup = tokens / one-row forwards (greedy = 1.00x)")
    for name in args.drafters.split(","):
        tokens = steps = 0
        total = 0.0
        for key, p, n, pred in items:
            ref = refs[f"{key}:{n}"]
            s, c = replay(make(name, tok), p, ref, cost, pred)
            tokens, steps, total = tokens + len(ref), steps + s, total + c
        print(f"{name:14s} tokens/step {tokens / steps:5.2f}   estimated speedup {tokens / total:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
