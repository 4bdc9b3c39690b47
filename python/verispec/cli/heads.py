"""`verispec heads`: train multi-token heads on a frozen model, and measure them.

Examples::

    verispec heads train --model smollm2 --data stdlib chat --self-distill --heads 4 --vocab 8192 --out heads/
    verispec heads train --model ./Qwen2-0.5B --data corpus.jsonl --heads 4 --out q-heads/ --device cuda
    verispec heads train --model smollm2 --data stdlib chat --self-distill --exit-layer 6 --out exit6/
    verispec heads eval --model smollm2 --heads heads/ --data held_out.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

from verispec.cli import _args


def register(subparsers) -> None:
    p = subparsers.add_parser("heads", help="train multi-token draft heads for a model, or evaluate them")
    sub = p.add_subparsers(dest="heads_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="smollm2", help="HF model directory, .gguf file, or 'smollm2' (default)")
        q.add_argument("--data", nargs="+", required=True,
                       help="files, directories, .jsonl (text / prompt[+response] / messages), 'stdlib' "
                            "(Python's standard library) or 'chat' (built-in prompts, needs --self-distill)")
        q.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        q.add_argument("--seq-len", type=_args.positive_int, default=256, help="tokens per training window (default 256)")
        q.add_argument("--max-tokens", type=_args.positive_int, default=200_000, help="cap on training positions (default 200k)")
        q.add_argument("--max-files", type=_args.positive_int, default=None, help="files taken from each directory, evenly spread")
        q.add_argument("--self-distill", action="store_true",
                       help="answer prompts with the model itself first (cached in --out) and train on the answers")
        q.add_argument("--chat-prompts", type=_args.positive_int, default=256, help="built-in chat prompts used by 'chat' (default 256)")
        q.add_argument("--distill-tokens", type=_args.positive_int, default=256, help="max answer length when self-distilling")

    t = sub.add_parser("train", help="train heads (base model frozen); resumes from --out if interrupted")
    common(t)
    t.add_argument("--out", required=True, help="output directory (heads, checkpoint, caches)")
    t.add_argument("--heads", type=_args.positive_int, default=4, help="number of heads (default 4)")
    t.add_argument("--arch", default="resblock", choices=("resblock", "layer"))
    t.add_argument("--vocab", type=_args.positive_int, default=None,
                   help="project onto the N most frequent training tokens (default: share the model's LM head)")
    t.add_argument("--exit-layer", type=_args.positive_int, default=None,
                   help="train an early-exit adapter on the hidden state after this many layers instead of heads")
    t.add_argument("--steps", type=_args.positive_int, default=2000)
    t.add_argument("--batch-size", type=_args.positive_int, default=256, help="positions per step")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--decay", type=float, default=0.8, help="loss weight of head i is decay**(i-1)")
    t.add_argument("--seed", type=_args.seed, default=0)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="per-head top-1 / top-5 accuracy on held-out data")
    common(e)
    e.add_argument("--heads", required=True, help="directory written by `verispec heads train`")
    e.add_argument("--json", default=None, help="also write the table as JSON here")
    e.set_defaults(func=_eval)


def _device(name):
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _sequences(args, model, tokenizer, out_dir: Path | None) -> tuple[list[list[int]], dict]:
    """Token windows of the data (texts cut into --seq-len windows; chats = prompt + answer)."""
    from verispec.heads.data import _chat_ids, read_data, self_distill

    corpus = read_data(args.data, max_files=args.max_files, chat_count=args.chat_prompts)
    cost: dict = {"sources": corpus.sources}
    seqs: list[list[int]] = []
    answered = [(p, r) for p, r in corpus.chats if r is not None]
    open_prompts = [p for p, r in corpus.chats if r is None]
    if open_prompts and not args.self_distill:
        raise ValueError(f"{len(open_prompts)} prompts have no response: pass --self-distill to answer them with "
                         "the model, or give responses in the JSONL")
    for p, r in answered:
        ids = _chat_ids(tokenizer, p) + tokenizer(r, add_special_tokens=False)["input_ids"]
        seqs.append(ids[: args.seq_len * 4])
    if open_prompts:
        cache = (out_dir or Path.home() / ".cache" / "verispec") / "self_distill.jsonl"
        t0 = time.perf_counter()
        got = self_distill(model, tokenizer, open_prompts, cache, max_new_tokens=args.distill_tokens)
        cost["self_distill_s"] = round(time.perf_counter() - t0, 1)
        cost["self_distill_prompts"] = len(open_prompts)
        seqs.extend(got[p] for p in open_prompts)
    budget = args.max_tokens - sum(len(s) for s in seqs)
    windows: list[list[int]] = []
    for text in corpus.texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        windows.extend(ids[i: i + args.seq_len] for i in range(0, len(ids) - 1, args.seq_len))
    random.Random(0).shuffle(windows)
    for w in windows:
        if budget <= 0:
            break
        seqs.append(w)
        budget -= len(w)
    cost["positions"] = sum(len(s) for s in seqs)
    return [s for s in seqs if len(s) > 1], cost


def _split(seqs: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Every 20th sequence is held out (chat answers and code both land on each side); small corpora
    still hold one out."""
    if len(seqs) < 2:
        raise ValueError(f"the data gives {len(seqs)} sequence(s); training needs at least 2 (one is held out)")
    k = 7 if len(seqs) > 7 else len(seqs) - 1
    train = [s for i, s in enumerate(seqs) if i % 20 != k]
    held = [s for i, s in enumerate(seqs) if i % 20 == k]
    return train, held


def _bar(label: str):
    t0 = time.perf_counter()
    shown = [-1]

    def show(done: int, total: int) -> None:
        dec = 10 * done // max(1, total)
        if dec != shown[0]:
            shown[0] = dec
            print(f"{label}: {done}/{total} sequences, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

    return show


def _encoded(model, seqs, num_out, exit_layer, path: Path):
    """Encode (cached in ``path``: the base forwards are most of the cost of a small run)."""
    import torch

    from verispec.heads.train import Encoded, encode

    if path.exists():
        d = torch.load(path, weights_only=True)
        if d["targets"].shape[1] == num_out + 1 and d["n"] == len(seqs):
            return Encoded(d["hidden"], d["targets"]), 0.0
    t0 = time.perf_counter()
    enc = encode(model, seqs, num_out, exit_layer, progress=_bar(f"encoding {path.stem}"))
    torch.save({"hidden": enc.hidden, "targets": enc.targets, "n": len(seqs)}, path)
    return enc, time.perf_counter() - t0


def _train(args) -> int:
    import torch

    from verispec.heads import init_heads
    from verispec.heads.train import evaluate, train_heads
    from verispec.hf.loading import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tok = load_model(args.model, device=_device(args.device))
    model.requires_grad_(False)
    seqs, cost = _sequences(args, model, tok, out)
    train_s, held = _split(seqs)
    num_out = 1 if args.exit_layer is not None else args.heads
    counts = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=torch.long)
    for s in train_s:
        counts += torch.bincount(torch.tensor(s), minlength=counts.numel())[: counts.numel()]
    heads = init_heads(model, num_heads=args.heads, arch=args.arch, vocab=args.vocab, token_counts=counts,
                       exit_layer=args.exit_layer, seed=args.seed)
    enc, enc_s = _encoded(model, train_s, num_out, args.exit_layer, out / "encoded_train.pt")
    held_enc, held_s = _encoded(model, held, num_out, args.exit_layer, out / "encoded_heldout.pt")
    print(f"training {args.heads if args.exit_layer is None else 'early-exit'} {args.arch} heads on {len(enc)} "
          f"positions ({len(held_enc)} held out), {sum(p.numel() for p in heads.trainable_parameters())} "
          "trainable parameters", file=sys.stderr)
    run = train_heads(heads, model, enc, args.steps, batch_size=args.batch_size, lr=args.lr, decay=args.decay,
                      checkpoint=out / "checkpoint.pt", seed=args.seed)
    acc = evaluate(heads, model, held_enc)
    heads.config.accuracy = [[round(float(x), 4) for x in row] for row in acc]
    cost.update(run)
    cost.update(encode_s=round(enc_s + held_s, 1), total_s=round(time.perf_counter() - t_all, 1),
                machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                        f"{_device(args.device)}",
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args=" ".join(sys.argv[1:]))
    heads.config.training = cost
    heads.save(out)
    _print_table(acc)
    print(f"saved to {out} (training cost: {json.dumps(cost)})")
    return 0


def _print_table(acc) -> None:
    print("head  top-1  top-5")
    for i, row in enumerate(acc, 1):
        print(f"{i:>4}  {float(row[0]):.3f}  {float(row[min(4, len(row) - 1)]):.3f}")


def _eval(args) -> int:
    from verispec.heads import load
    from verispec.heads.train import encode, evaluate
    from verispec.hf.loading import load_model

    model, tok = load_model(args.model, device=_device(args.device))
    heads = load(args.heads, model)
    seqs, _ = _sequences(args, model, tok, Path(args.heads))
    num_out = 1 if heads.adapter is not None else heads.num_heads
    enc = encode(model, seqs, num_out, heads.config.exit_layer, progress=_bar("encoding"))
    acc = evaluate(heads, model, enc)
    _print_table(acc)
    if args.json:
        Path(args.json).write_text(json.dumps({"positions": len(enc), "accuracy": acc.tolist()}, indent=1))
    return 0
