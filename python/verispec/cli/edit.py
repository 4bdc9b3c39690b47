"""`verispec edit`: fast apply. The model rewrites a file following an instruction; the file itself is
the prediction, so every stretch the model copies is verified in long chains instead of decoded token
by token. The output is exactly the model's greedy output.

Examples::

    verispec edit utils.py --instruction "Add type hints to every function."
    verispec edit utils.py --instruction "Rename fetch to fetch_all." --out utils_new.py --check
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from verispec.cli.generate import add_model_args


def build_prompt(tokenizer, instruction: str, source: str, name: str) -> tuple[list[int], list[int]]:
    """(chat prompt ids, prediction ids): the instruction and the file in a fenced block; the prediction
    is the block as the answer is expected to quote it."""
    lang = {".py": "python", ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go", ".c": "c",
            ".cpp": "cpp", ".h": "c", ".java": "java", ".md": "markdown"}.get(os.path.splitext(name)[1], "")
    body = source if source.endswith("\n") else source + "\n"
    block = f"```{lang}\n{body}```"
    msg = f"{instruction}\n\nRewrite the whole file `{os.path.basename(name)}` with the change:\n\n{block}"
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True)
        ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
    else:  # a base model: the request as plain text
        ids = tokenizer(msg + "\n\n").input_ids
    return ids, tokenizer(block, add_special_tokens=False).input_ids


def strip_fence(text: str) -> str:
    """The content of the first fenced block of ``text`` (the whole text when there is none)."""
    start = text.find("```")
    if start < 0:
        return text
    nl = text.find("\n", start)
    end = text.find("```", nl + 1) if nl >= 0 else -1
    return text[nl + 1 : end] if nl >= 0 and end >= 0 else text[nl + 1 :] if nl >= 0 else text


def _run(args: argparse.Namespace) -> int:
    import torch

    import verispec
    from verispec.hf.loading import load_model

    if not args.instruction or not args.instruction.strip():
        raise ValueError("--instruction must say what to change")
    if not os.path.isfile(args.file):
        raise FileNotFoundError(f"{args.file}: no such file")
    with open(args.file, encoding="utf-8") as fh:
        source = fh.read()
    if not source.strip():
        raise ValueError(f"{args.file} is empty: nothing to edit")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model, tok = load_model(args.model, device=device, dtype=dtype)
    prompt, pred = build_prompt(tok, args.instruction, source, args.file)
    max_new = args.max_new_tokens or int(1.5 * len(pred)) + 128
    streamer = None
    if args.out is None and not args.no_stream:
        from transformers import TextStreamer

        streamer = TextStreamer(tok, skip_prompt=True)
    t = time.perf_counter()
    res = verispec.generate(model, [prompt], prediction=[pred], max_new_tokens=max_new, streamer=streamer,
                            cost="auto" if args.cost else None)
    secs = time.perf_counter() - t
    text = tok.decode(res.new_tokens[0], skip_special_tokens=True)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(strip_fence(text) if not args.raw else text)
    elif streamer is None:
        print(text)
    st = res.stats
    print(f"\n[verispec edit] {st.new_tokens} tokens in {secs:.2f}s ({st.new_tokens / secs:.1f} tokens/s, "
          f"{st.tokens_per_step:.2f} tokens/step); prediction tokens: {res.accepted_prediction_tokens[0]} accepted, "
          f"{res.rejected_prediction_tokens[0]} rejected", file=sys.stderr)
    if args.check:
        ids = torch.tensor([prompt], device=model.device)
        t = time.perf_counter()
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0].tolist()
        ref_s = time.perf_counter() - t
        same = ref == res.sequences[0].tolist()
        print(f"[verispec edit] plain greedy decoding: {ref_s:.2f}s ({(len(ref) - len(prompt)) / ref_s:.1f} tokens/s); "
              f"output {'identical' if same else 'DIFFERENT'}", file=sys.stderr)
        return 0 if same else 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="rewrite a file following an instruction, the file as the prediction",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the file to edit")
    p.add_argument("--instruction", "-i", required=True, help="what to change")
    add_model_args(p)
    p.add_argument("--out", "-o", default=None,
                   help="write the new file here (the fenced block of the answer; --raw for the whole answer) "
                        "instead of streaming to stdout")
    p.add_argument("--raw", action="store_true", help="with --out: write the model's whole answer")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 1.5 x the file's tokens + 128")
    p.add_argument("--no-stream", action="store_true", help="print when done instead of streaming")
    p.add_argument("--no-cost", dest="cost", action="store_false",
                   help="verify whole chains instead of sizing them from the measured forward cost")
    p.add_argument("--check", action="store_true", help="also decode plainly and report whether the outputs are identical")
    p.set_defaults(func=_run)
