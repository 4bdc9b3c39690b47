"""`verispec datastore build | info | query`: build a retrieval datastore from text, inspect it, and
show the draft tree it proposes for a context. Imports stay inside the handlers (cheap --help)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from verispec.cli import _args
from verispec.cli._args import UserError


def _tokenizer(path: str):
    """The tokenizer named by --tokenizer; a failure names the path (the library's own message may only
    say which package to install)."""
    from verispec.datastore.tokenize import load_tokenizer

    try:
        return load_tokenizer(path)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--tokenizer {path}: cannot load a tokenizer from it ({first})") from exc


def _build(args: argparse.Namespace) -> int:
    from verispec.datastore import Datastore
    from verispec.datastore.tokenize import iter_texts, tokenize_documents

    t0 = time.perf_counter()
    enc = _tokenizer(args.tokenizer)
    exts = {e if e.startswith(".") else "." + e for e in args.ext.split(",")} if args.ext else None
    stats: dict = {}
    docs = tokenize_documents(enc, iter_texts(args.input, exts, args.field, stats))
    vocab = args.vocab_size or enc.vocab_size
    if not args.quiet:
        print(f"tokenizer {enc.name} (vocab {enc.vocab_size:,}, loaded in {time.perf_counter() - t0:.1f} s)",
              file=sys.stderr)
    ds = Datastore.build(docs, args.out, vocab_size=vocab, progress=not args.quiet)
    info = ds.info()["file"]
    print(f"{args.out}: {info['num_docs']:,} documents ({stats.get('files', 0):,} files, "
          f"{stats.get('skipped', 0):,} skipped as not UTF-8), {info['num_tokens']:,} tokens, "
          f"{info['file_bytes'] / info['num_tokens']:.2f} bytes/token, {time.perf_counter() - t0:.1f} s total")
    return 0


def _info(args: argparse.Namespace) -> int:
    from verispec.datastore import Datastore

    t0 = time.perf_counter()
    ds = Datastore.open(args.path)
    t_open = time.perf_counter() - t0
    info = ds.info()
    f = info["file"]
    if args.verify:
        t1 = time.perf_counter()
        ds.verify(progress=sys.stderr.isatty())  # O(corpus): say how far it is, on a terminal
        f["verified_in_s"] = round(time.perf_counter() - t1, 3)
    f["bytes_per_token"] = round(f["file_bytes"] / f["num_tokens"], 3)
    f["open_ms"] = round(1000 * t_open, 3)
    if args.json:
        print(json.dumps(f, indent=2))
        return 0
    print(f"{f['path']}: verispec datastore, format version {f['version']}")
    print(f"  documents      {f['num_docs']:,}")
    print(f"  tokens         {f['num_tokens']:,}")
    print(f"  vocab_size     {f['vocab_size']:,}  ({f['token_bits']}-bit tokens, {f['offset_bits']}-bit offsets)")
    if f["code_entries"]:
        print(f"  text codes     {f['code_bits']}-bit codes for the {f['code_entries']:,} most frequent tokens, "
              f"{f['exceptions']:,} exceptions ({100 * f['exceptions'] / f['num_tokens']:.2f}% of tokens)")
    if f["successor_heads"]:
        print(f"  successors     lists for the {f['successor_heads']:,} most frequent tokens, "
              f"{f['successor_entries']:,} entries")
    print(f"  file           {f['file_bytes']:,} bytes, {f['bytes_per_token']} bytes/token")
    print(f"  opened in      {f['open_ms']} ms")
    if args.verify:
        print(f"  verified       checksums and suffix array OK ({f['verified_in_s']} s)")
    return 0


def _query(args: argparse.Namespace) -> int:
    from verispec.datastore import Datastore

    ds = Datastore.open(args.path)
    enc = None
    if args.tokenizer:
        enc = _tokenizer(args.tokenizer)
    if args.ids is not None:
        try:
            ctx = [int(x) for x in args.ids.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"--ids must be integers separated by commas or spaces, got {args.ids!r}") from None
    elif args.text is not None:
        if enc is None:
            raise ValueError("--text needs --tokenizer (or pass --ids)")
        ctx = enc.encode(args.text)
    else:
        raise ValueError("give the context as --ids or --text")
    t0 = time.perf_counter()
    d = ds.draft_arrays(ctx, budget=args.budget, max_depth=args.max_depth, max_match=args.max_match,
                        min_count=args.min_count, mode=args.mode)
    us = 1e6 * (time.perf_counter() - t0)
    toks, parents, scores = d.tokens.tolist(), d.parents.tolist(), d.scores.tolist()
    if args.json:
        print(json.dumps({"tokens": toks, "parents": parents, "scores": scores, "match_len": d.match_len,
                          "match_count": d.match_count}))
        return 0
    print(f"context: {len(ctx)} tokens; matched suffix of {d.match_len} tokens, {d.match_count:,} occurrences; "
          f"{len(toks)} draft nodes in {us:.0f} us")
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        kids.setdefault(p, []).append(i)
    stack = [(i, 1) for i in reversed(kids.get(-1, []))]
    while stack:  # depth-first, so every node sits under its parent
        i, depth = stack.pop()
        text = f" {enc.token_text(toks[i])!r}" if enc else ""
        print(f"  {'  ' * (depth - 1)}[{i}] {toks[i]}{text}  p={scores[i]:.3f}")
        stack.extend((j, depth + 1) for j in reversed(kids.get(i, [])))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("datastore", help="build, inspect and query a retrieval datastore")
    sub = p.add_subparsers(dest="datastore_command", required=True)

    b = sub.add_parser("build", help="tokenize text and index it into a datastore file")
    b.add_argument("--tokenizer", required=True, help="tokenizer.json, a Hugging Face model directory, or a .gguf file")
    b.add_argument("--input", required=True, nargs="+", type=_args.input_path,
                   help="files (one document each), directories (walked), or .jsonl[.gz] (one document per line)")
    b.add_argument("--out", required=True, type=_args.output_file, help="output datastore file (written atomically)")
    b.add_argument("--ext", default=None, help="only these file suffixes inside directories, e.g. .py,.md")
    b.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    b.add_argument("--vocab-size", type=_args.positive_int, default=None, help="default: the tokenizer's vocabulary size")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=_build)

    i = sub.add_parser("info", help="show a datastore's header (O(1) open), optionally verify it")
    i.add_argument("path", type=_args.input_file)
    i.add_argument("--verify", action="store_true", help="check checksums and that the suffix array is a sorted permutation (O(corpus))")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)

    q = sub.add_parser("query", help="print the draft tree proposed for a context")
    q.add_argument("path", type=_args.input_file)
    q.add_argument("--ids", default=None, help="context token ids, e.g. '12,7,99'")
    q.add_argument("--text", default=None, help="context text (needs --tokenizer)")
    q.add_argument("--tokenizer", default=None, help="to encode --text and show token strings")
    q.add_argument("--budget", type=_args.positive_int, default=32)
    q.add_argument("--max-depth", type=_args.positive_int, default=12)
    q.add_argument("--max-match", type=_args.positive_int, default=16)
    q.add_argument("--min-count", type=_args.positive_int, default=1)
    q.add_argument("--mode", choices=["tree", "chain", "rest"], default="tree")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_query)

