"""Retrieval drafting benchmark: verispec.Datastore beside the PyPI ``draftretriever`` (ADED's tri-gram
retriever derived from REST's DraftRetriever), same tokenized corpus, same replay.

Corpus: the Python standard library tokenized with SmolLM2's tokenizer (``_corpus.py``); ~3% of the
files are held out and replayed as "model output": at each step the drafter proposes a tree from the
true context, the longest tree path matching the true continuation is accepted, plus one bonus token
(Spec-Bench counting: plain decoding = 1.0 tokens/step). Timed: the Python call a drafter makes.

``verispec bench --op datastore`` replays in-process (open time and RSS are not isolated);
``bench/bench_datastore.py`` runs each replay in a fresh process and reports those too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from verispec.bench._common import Context

# name -> how the drafter is called. Ours span draft sizes; "rest" is REST's rule on our index.
OURS = {
    "verispec tree b8": dict(budget=8, max_depth=8),
    "verispec tree b16": dict(budget=16, max_depth=10),
    "verispec tree b24": dict(budget=24, max_depth=12),
    "verispec tree b32": dict(budget=32, max_depth=12),
    "verispec tree b24, min_count=1": dict(budget=24, max_depth=12, min_count=1),
    "verispec tree b24, backoff=4": dict(budget=24, max_depth=12, min_count=1, backoff=4, backoff_prior=4.0),
    "verispec chain d12": dict(budget=12, max_depth=12, mode="chain"),
    "REST rule (our index)": dict(budget=64, max_depth=10, max_match=16, min_match=2, mode="rest",
                                  rest_max_matches=5000),
}
PEER = {
    "draftretriever choices=16": dict(choices=16),
    "draftretriever choices=32": dict(choices=32),
    "draftretriever choices=64": dict(choices=64),
}


def accepted_len_tree(tokens: list, parents: list, truth: list, i: int) -> int:
    """Longest path of a (tokens, parents) tree that matches ``truth[i:]``."""
    kids: dict[int, dict[int, int]] = {}
    for j, (t, p) in enumerate(zip(tokens, parents)):
        kids.setdefault(p, {}).setdefault(t, j)
    cur, n = -1, 0
    while i + n < len(truth):
        nxt = kids.get(cur, {}).get(truth[i + n])
        if nxt is None:
            break
        cur, n = nxt, n + 1
    return n


def accepted_len_paths(paths: list, truth: list, i: int) -> tuple[int, int]:
    """(longest path prefix matching ``truth[i:]``, distinct nodes) of draftretriever's padded paths."""
    best, prefixes = 0, set()
    for p in paths:
        n = 0
        for k, t in enumerate(p):
            if t < 0:
                break
            prefixes.add(tuple(p[:k + 1]))
            if n == k and i + k < len(truth) and truth[i + k] == t:
                n += 1
        best = max(best, n)
    return best, len(prefixes)


def replay(draft, docs: list[list[int]], max_tokens: int) -> dict:
    """Replay held-out documents through ``draft(ctx) -> score(truth, i) -> (accepted, size)``."""
    lat, steps, emitted, nodes, cpu = [], 0, 0, 0, 0.0
    for doc in docs:
        i = 1
        while i < len(doc) and emitted < max_tokens:
            ctx = doc[max(0, i - 32):i]
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = draft(ctx)
            lat.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
            acc, size = out(doc, i)
            step = min(acc + 1, len(doc) - i)
            i += step
            emitted += step
            steps += 1
            nodes += size
        if emitted >= max_tokens:
            break
    lat_us = np.array(lat) * 1e6
    return {"steps": steps, "tokens": emitted, "tokens_per_step": emitted / steps, "avg_draft": nodes / steps,
            "cpu_mean_us": cpu / steps * 1e6,
            "lat_median_us": float(np.median(lat_us)), "lat_p99_us": float(np.percentile(lat_us, 99)),
            "lat_mean_us": float(lat_us.mean())}


def verispec_drafter(index: str, cfg: dict, prefetch: bool = False):
    from verispec.datastore import Datastore

    ds = Datastore.open(index, prefetch=prefetch)

    def draft(ctx):
        tree = ds.draft(ctx, **cfg)  # only this call is timed; the scoring below is not
        return lambda truth, i: (accepted_len_tree(tree.tokens.tolist(), tree.parents.tolist(), truth, i), len(tree))

    return draft


def draftretriever_drafter(index: str, cfg: dict):
    import draftretriever

    reader = draftretriever.Reader(index)

    def draft(ctx):
        if len(ctx) < 2:  # the reader needs a tri-gram key
            return lambda truth, i: (0, 0)
        paths = reader.search(ctx[-16:], **cfg)[0]
        return lambda truth, i: accepted_len_paths(paths, truth, i)

    return draft


def build_draftretriever(docs, path: str, vocab_size: int) -> None:
    import draftretriever

    w = draftretriever.Writer(path, vocab_size=vocab_size)
    for d in docs:
        w.add_entry(d.tolist())
    w.finalize()


def run(ctx: Context) -> dict:
    """In-process replay; quick: an eighth of the library indexed, 3000 replayed tokens, b16 vs choices=16."""
    from verispec.bench._corpus import load_corpus
    from verispec.datastore import Datastore

    corpus = load_corpus(every=8 if ctx.quick else 1, verbose=True)
    docs = [d.tolist() for d in corpus.heldout]
    replay_tokens = 3000 if ctx.quick else 30_000
    n_tok = corpus.train_tokens
    ours = {k: OURS[k] for k in ("verispec tree b16", "verispec chain d12")} if ctx.quick else OURS
    peers = {"draftretriever choices=16": PEER["draftretriever choices=16"]} if ctx.quick else PEER
    rows = []
    with tempfile.TemporaryDirectory(prefix="verispec-bench-") as work:
        index = str(Path(work) / "stdlib.vsds")
        t0 = time.perf_counter()
        Datastore.build(corpus.train, index, vocab_size=corpus.vocab_size, progress=False)
        build_ours = time.perf_counter() - t0
        systems = [(name, "verispec", cfg) for name, cfg in ours.items()]
        peer_index, build_peer = str(Path(work) / "stdlib.draftretriever"), None
        try:
            t0 = time.perf_counter()
            build_draftretriever(corpus.train, peer_index, corpus.vocab_size)
            build_peer = time.perf_counter() - t0
            systems += [(name, "draftretriever", cfg) for name, cfg in peers.items()]
        except ImportError:
            systems += [(name, None, cfg) for name, cfg in peers.items()]
        for name, kind, cfg in systems:
            if kind is None:
                rows.append({"name": name, "skipped": "draftretriever is not installed"})
                continue
            draft = verispec_drafter(index, cfg) if kind == "verispec" else draftretriever_drafter(peer_index, cfg)
            replay(draft, docs, min(replay_tokens, 500))  # warm the pages the queries touch
            r = replay(draft, docs, replay_tokens)
            path = index if kind == "verispec" else peer_index
            r.update(name=name, build_s=build_ours if kind == "verispec" else build_peer,
                     bytes_per_token=os.path.getsize(path) / n_tok)
            rows.append(r)
            ctx.log(f"datastore {name}: {r['tokens_per_step']:.3f} tok/step, draft {r['avg_draft']:.1f}, "
                    f"{r['lat_median_us']:.1f}/{r['lat_p99_us']:.1f} us median/p99")
    shape = f"{n_tok:,} indexed tokens, {replay_tokens:,} replayed"
    out_rows = [{"shape": shape, "params": {"indexed_tokens": n_tok, "replay_tokens": replay_tokens},
                 "impls": {}}]
    for r in rows:
        if "skipped" in r:
            out_rows[0]["impls"][r["name"]] = {"skipped": r["skipped"]}
            continue
        out_rows[0]["impls"][r["name"]] = {
            "ms": r["lat_median_us"] / 1e3, "p99_ms": r["lat_p99_us"] / 1e3,
            "extra": {"tokens/step": round(r["tokens_per_step"], 3), "avg draft": round(r["avg_draft"], 1),
                      "build s": round(r["build_s"], 2), "bytes/token": round(r["bytes_per_token"], 2)}}
    return {"op": "datastore", "rows": out_rows,
            "floor": None,
            "notes": [f"corpus: Python {corpus.meta['python']} standard library ({corpus.meta['files']} files"
                      f"{', every 8th' if ctx.quick else ''}), tokenizer {corpus.meta['tokenizer']}",
                      "time: median latency of one draft call (context = previous 32 tokens), pages warm; "
                      "tokens/step: longest accepted path + 1 bonus token (plain decoding = 1.0)"]}
