"""CPU smoke test of an installed verispec (a wheel, no compiler): every op once, at tiny sizes,
through the public API. Run by tests/test_wheel.py in a fresh virtual environment and by
cibuildwheel's test step; exits non-zero with the failing op's name on any mismatch.

    TRITON_INTERPRET=1 python tools/wheel_smoke.py
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton's kernels run in its interpreter on a CPU

import torch  # noqa: E402

import verispec  # noqa: E402
from verispec import _native  # noqa: E402


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{name}: {'ok' if ok else 'FAILED'}{f' ({detail})' if detail else ''}", flush=True)
    if not ok:
        sys.exit(f"smoke test failed: {name}")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    print(f"verispec {verispec.__version__} from {os.path.dirname(verispec.__file__)}")
    check("native module", _native.native_error() is None, str(_native.native_error() or ""))
    backends = ["torch"] + (["triton"] if triton_available() else [])
    from verispec.bench.commit_kv import make_case as commit_case
    from verispec.bench.tree_attention import Problem, _args, build
    from verispec.bench.verify import make_case as verify_case
    from verispec.bench.verify import run_verispec

    # tree_buffers + verify: every mode, each backend against torch
    for case in ("greedy", "exact_chain", "exact_tree"):
        c = verify_case(case, 3, 4, 50, "cpu", dtype=torch.float32)
        want = run_verispec(c, "torch")()
        for be in backends[1:]:
            got = run_verispec(c, be)()
            check(f"verify {case} {be}", torch.equal(got.tokens, want.tokens))
        check(f"verify {case} torch", want.tokens.shape == (3, c["max_depth"] + 1))

    # tree_attention: each backend against a float64 run of the reference
    pr = build(Problem(2, 20, 5, Hq=4, Hkv=2, D=16, dtype=torch.float32), torch.device("cpu"))
    ref = verispec.tree_attention(*[x.double() if x.is_floating_point() else x for x in _args(pr)], backend="torch")
    for be in backends:
        err = float((verispec.tree_attention(*_args(pr), backend=be).double() - ref).abs().max())
        check(f"tree_attention {be}", err < 1e-4, f"max abs err {err:.1e}")

    # commit_kv: each backend moves the same rows as torch, both layouts
    for paged in (False, True):
        outs = []
        for be in backends:
            ks, vs, pl, rows, table, _ = commit_case(2, 3, 9, "cpu", dtype=torch.float32, layers=2, hkv=2, d=8,
                                                     paged=paged)
            outs.append((verispec.commit_kv(ks, vs, pl, rows, block_table=table, backend=be), ks + vs))
        same = all(torch.equal(o[0], outs[0][0]) and all(torch.equal(a, b) for a, b in zip(o[1], outs[0][1]))
                   for o in outs)
        check(f"commit_kv {'paged' if paged else 'contiguous'} {'/'.join(backends)}", same)

    # datastore: build, open, draft (the native core)
    docs = [torch.randint(0, 100, (400,), generator=torch.Generator().manual_seed(i)).tolist() for i in range(20)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "smoke.vsds")
        verispec.Datastore.build(docs, path, vocab_size=100, progress=False)
        ds = verispec.Datastore.open(path)
        tree = ds.draft(docs[3][:50], budget=8, max_depth=4)
        # a 50-token context occurs once in random data: its continuation must be among the root's children
        roots = tree.tokens[tree.parents < 0].tolist()
        check("datastore draft", 0 < len(tree) <= 8 and docs[3][50] in roots, f"{len(tree)} nodes")
    pi = verispec.PromptIndex(docs[0])
    check("prompt index draft", len(pi.draft(budget=4, max_depth=4)) <= 4)

    # generate: greedy output identical to plain greedy decoding, tiny random model
    try:
        import transformers as tf
    except ImportError:
        print("generate: skipped (transformers is not installed)")
        return 0
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, vocab_size=100, max_position_embeddings=256)
    model = tf.LlamaForCausalLM(cfg).eval()
    prompt = docs[0][:30]
    ids = torch.tensor([prompt])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                         pad_token_id=0)[0].tolist()
    out = verispec.generate(model, [prompt], drafter=verispec.PromptLookupDrafter(num_tokens=3, budget=4),
                            max_new_tokens=12)
    check("generate (prompt lookup) == greedy", out.sequences[0].tolist() == ref)
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
