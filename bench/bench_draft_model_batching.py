"""Draft-model drafter: one batched draft forward per drafted token for all requests (the package's
`DraftModelDrafter`) against the old loop (one request at a time, its own DynamicCache, kept only here).

Random-weight Llama draft models (``tiny``: the tests' 2-layer d=48 model, vocabulary 97; ``small``:
4 layers, d=512, vocabulary 32000, ~45M parameters), a batch of ragged prompts, ``--steps`` steps of
``num_tokens`` drafts. The step sequence (how many drafts each request accepts, its correction, one
request finishing half-way) is recorded once, then both drafters replay it in alternating rounds
(a busy machine slows both alike). Reports the first propose (prefill of the prompts) and the mean of
the later ones, median over rounds, and checks that both draft the same tokens::

    OMP_NUM_THREADS=1 python bench/bench_draft_model_batching.py
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from verispec import DraftModelDrafter, DraftTree
from verispec.drafters.base import Accepted, Context

SIZES = {
    "tiny": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, vocab_size=97),
    "small": dict(hidden_size=512, intermediate_size=1536, num_attention_heads=8, num_key_value_heads=4,
                  num_hidden_layers=4, vocab_size=32000),
}


class LoopDrafter(DraftModelDrafter):
    """The drafter before batching: per request its own DynamicCache, cropped to the common prefix,
    ``num_tokens`` single-request forwards (greedy only)."""

    def begin(self, prompts):
        self._caches: dict[int, tuple] = {}

    @torch.no_grad()
    def propose(self, contexts):
        from transformers import DynamicCache

        trees = []
        for ctx in contexts:
            cache, held = self._caches.get(ctx.request) or (DynamicCache(), [])
            keep = 0
            while keep < min(len(held), len(ctx.tokens) - 1) and held[keep] == ctx.tokens[keep]:
                keep += 1
            if keep < len(held):
                cache.crop(keep - len(held))
            feed, drafted = ctx.tokens[keep:], []
            for _ in range(self.num_tokens):
                ids = torch.tensor([feed], device=self._device)
                logits = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: cache}).logits[0, -1]
                drafted.append(int(logits.argmax()))
                feed = drafted[-1:]
            self._caches[ctx.request] = (cache, list(ctx.tokens) + drafted[:-1])
            trees.append(DraftTree.chain(drafted))
        return trees

    def update(self, accepted):
        for a in accepted:
            if a.finished:
                self._caches.pop(a.request, None)


def record(drafter, prompts: dict, steps: int, seed: int) -> list:
    """Run the batched drafter once and record each step's contexts and updates."""
    rng = random.Random(seed)
    live = {r: list(p) for r, p in prompts.items()}
    drafter.begin(list(live.values()))
    trace = []
    n = drafter.num_tokens
    for step in range(steps):
        contexts = [Context(r, list(t)) for r, t in live.items()]
        trees = drafter.propose(contexts)
        updates = []
        for c, tree in zip(contexts, trees):
            got = tree.tokens.tolist()
            a = rng.randint(0, n)  # accepted drafts, then the target's correction (or a bonus token)
            new = got[:a] + [(got[a] + rng.randrange(1, drafter.vocab_size)) % drafter.vocab_size if a < n
                             else rng.randrange(drafter.vocab_size)]
            live[c.request].extend(new)
            updates.append(Accepted(c.request, new, a, finished=step == steps // 2 and c.request == 2))
        trace.append((contexts, updates))
        for u in updates:
            if u.finished:
                del live[u.request]
        drafter.update(updates)
    return trace


def replay(drafter, prompts: dict, trace: list) -> tuple[list[float], list[list[int]]]:
    drafter.begin(list(prompts.values()))
    times, drafts = [], []
    for contexts, updates in trace:
        t0 = time.perf_counter()
        trees = drafter.propose(contexts)
        times.append(time.perf_counter() - t0)
        drafts.append([t.tokens.tolist() for t in trees])
        drafter.update(updates)
    return times, drafts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--prompt-lens", default="40,200,75,120", help="one prompt per request (ragged)")
    ap.add_argument("--num-tokens", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import transformers as tf

    lens = [int(x) for x in args.prompt_lens.split(",")]
    print(f"torch threads {torch.get_num_threads()}, batch {len(lens)} prompts of {lens} tokens, "
          f"num_tokens {args.num_tokens}, {args.steps} steps, {args.rounds} rounds each")
    print("| draft model | first propose: loop / batched (ms) | later proposes: loop / batched (ms) | "
          "speedup later | same drafts |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        cfg = tf.LlamaConfig(max_position_embeddings=1024, **SIZES[size])
        model = tf.LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # peaked logits, as in the tests
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.3 if size == "tiny" else 0.05)
        rng = random.Random(1)
        # request ids out of order, not 0..B-1
        prompts = {r: [rng.randrange(cfg.vocab_size) for _ in range(n)] for r, n in zip((3, 0, 2, 9, 5, 7), lens)}
        batched = DraftModelDrafter(model, num_tokens=args.num_tokens)
        loop = LoopDrafter(model, num_tokens=args.num_tokens)
        trace = record(batched, prompts, args.steps, seed=2)
        first = {"loop": [], "batched": []}
        later = {"loop": [], "batched": []}
        outs = {}
        for _ in range(args.rounds):
            for name, d in (("loop", loop), ("batched", batched)):
                times, outs[name] = replay(d, prompts, trace)
                first[name].append(times[0])
                later[name].append(statistics.mean(times[1:]))
        f = {k: statistics.median(v) * 1e3 for k, v in first.items()}
        s = {k: statistics.median(v) * 1e3 for k, v in later.items()}
        print(f"| {size} | {f['loop']:.2f} / {f['batched']:.2f} | {s['loop']:.2f} / {s['batched']:.2f} | "
              f"{s['loop'] / s['batched']:.2f}x | {outs['loop'] == outs['batched']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
