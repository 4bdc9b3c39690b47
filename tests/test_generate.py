"""Lossless: verispec.generate's greedy output is token-identical to model.generate(do_sample=False).

Tiny random-weight Llama, Qwen2, GPT-2 and Gemma-2 (sliding window 5 + soft-capping) in fp32 on CPU,
every drafter (including adversarial ones), batch 1 and a ragged batch of 3, both attention paths.
The oracle is Hugging Face's own greedy loop run on each request alone.
"""

from __future__ import annotations

import pytest
import torch
from _generate_utils import VOCAB, OracleTreeDrafter, RandomTreeDrafter, reference_greedy, tiny_model

import verispec
from verispec import NoDrafter, PromptLookupDrafter

ARCHS = ["llama", "qwen2", "gpt2", "gemma2"]
NEW = 24


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


def _prompts(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    # Repeats inside the prompt give the prompt-lookup drafter something to find.
    out = []
    for n in lengths:
        base = torch.randint(0, VOCAB, (max(1, n // 2),), generator=g).tolist()
        out.append((base * 3)[:n])
    return out


def _drafters(name, refs):
    if name == "none":
        return NoDrafter()
    if name == "prompt_lookup":
        return PromptLookupDrafter(num_tokens=5, max_matches=3)
    if name == "random":
        return RandomTreeDrafter(VOCAB, budget=9, seed=3)
    if name == "oracle":
        return OracleTreeDrafter(refs, VOCAB, seed=5)
    if name == "retrieval":
        from verispec import Datastore, RetrievalDrafter

        # The corpus holds the true continuations with every 5th token corrupted, plus noise, so
        # drafts are accepted for a few tokens and then rejected.
        g = torch.Generator().manual_seed(9)
        docs = [[t if i % 5 else (t + 1) % VOCAB for i, t in enumerate(r)] for r in refs.values()]
        docs += [torch.randint(0, VOCAB, (200,), generator=g).tolist() for _ in range(3)]
        return RetrievalDrafter(Datastore.from_documents(docs, vocab_size=VOCAB), budget=7, max_depth=4)
    raise ValueError(name)


DRAFTERS = ["none", "prompt_lookup", "random", "oracle", "retrieval"]


@pytest.mark.parametrize("attention", ["tree", "mask"])
@pytest.mark.parametrize("drafter", DRAFTERS)
@pytest.mark.parametrize("lengths", [(7,), (11, 3, 1)], ids=["batch1", "batch3"])
def test_greedy_identical_to_hf(arch_model, drafter, lengths, attention):
    arch, model = arch_model
    prompts = _prompts(lengths)
    refs = {b: reference_greedy(model, p, NEW, None) for b, p in enumerate(prompts)}
    out = verispec.generate(model, prompts, drafter=_drafters(drafter, refs), max_new_tokens=NEW,
                            eos_token_id=[], attention=attention)
    for b in range(len(prompts)):
        assert out.sequences[b].tolist() == refs[b], f"{arch}/{drafter}/{attention}: request {b} differs"
    s = out.stats
    assert s.new_tokens == NEW * len(prompts)
    assert sum(s.accepted_hist) == s.request_steps
    if drafter == "none":
        assert s.tokens_per_step == 1.0 and s.steps == NEW
    if drafter == "oracle":
        assert s.tokens_per_step > 1.3  # the drafts were used, not just verified away
    if drafter != "none":
        assert s.draft_nodes > 0 and s.acceptance_rate < 1  # drafts were verified, and some rejected
    if drafter == "retrieval":
        assert s.acceptance_rate > 0  # the corrupted corpus's drafts are accepted for a few tokens


def test_padded_tensor_input_left_and_right(arch_model):
    """A padded batch (left or right) gives each request the output it gets alone."""
    arch, model = arch_model
    prompts = _prompts((9, 4, 6), seed=7)
    refs = [reference_greedy(model, p, 12, None) for p in prompts]
    L = max(len(p) for p in prompts)
    for side in ("left", "right"):
        ids = torch.full((3, L), 5, dtype=torch.long)
        mask = torch.zeros(3, L, dtype=torch.long)
        for b, p in enumerate(prompts):
            sl = slice(L - len(p), L) if side == "left" else slice(0, len(p))
            ids[b, sl] = torch.tensor(p)
            mask[b, sl] = 1
        out = verispec.generate(model, ids, attention_mask=mask, drafter=PromptLookupDrafter(), max_new_tokens=12,
                                eos_token_id=[])
        assert [s.tolist() for s in out.sequences] == refs, side


def test_eos_per_request_and_exact_max_new_tokens():
    model = tiny_model("llama", seed=2)
    prompts = _prompts((6, 9, 4), seed=11)
    free = [reference_greedy(model, p, 20, None) for p in prompts]
    # an EOS id that request 0 emits mid-way; the others may or may not emit it
    gen0 = free[0][len(prompts[0]):]
    eos = gen0[7]
    refs = [reference_greedy(model, p, 20, [eos]) for p in prompts]
    assert len(refs[0]) < len(free[0])  # the reference really stopped early
    out = verispec.generate(model, prompts, drafter=RandomTreeDrafter(VOCAB, seed=1), max_new_tokens=20,
                            eos_token_id=eos)
    assert [s.tolist() for s in out.sequences] == refs
    for s, p in zip(out.sequences, prompts):
        n = len(s) - len(p)
        assert n == 20 or s[-1].item() == eos
    assert out.stats.new_tokens == sum(len(s) - len(p) for s, p in zip(out.sequences, prompts))


@pytest.mark.parametrize("max_new", [1, 2, 5])
def test_max_new_tokens_exact_with_deep_drafts(max_new):
    """Drafts deeper than the remaining budget are accepted but the output is cut exactly."""
    model = tiny_model("qwen2")
    prompts = _prompts((8, 5))
    refs = {b: reference_greedy(model, p, 30, None) for b, p in enumerate(prompts)}
    out = verispec.generate(model, prompts, drafter=OracleTreeDrafter(refs, VOCAB, seed=2, max_depth=8),
                            max_new_tokens=max_new, eos_token_id=[])
    for b, p in enumerate(prompts):
        assert out.sequences[b].tolist() == refs[b][: len(p) + max_new]


def test_finished_requests_leave_the_batch():
    """A request that stops early stops costing rows: later steps run on fewer requests."""
    model = tiny_model("llama", seed=2)
    prompts = _prompts((6, 9, 4), seed=11)
    steps_seen = []

    class Spy(NoDrafter):
        def propose(self, contexts):
            steps_seen.append(sorted(c.request for c in contexts))
            return super().propose(contexts)

    gen0 = reference_greedy(model, prompts[0], 20, None)[len(prompts[0]):]
    out = verispec.generate(model, prompts, drafter=Spy(), max_new_tokens=20, eos_token_id=gen0[2])
    n0 = len(out.sequences[0]) - len(prompts[0])
    assert n0 <= 3
    assert all(0 not in s for s in steps_seen[n0:])
    assert steps_seen[0] == [0, 1, 2]
    assert out.stats.request_steps == sum(len(s) for s in steps_seen)


def test_prompt_of_one_token_and_streamer():
    from transformers import TextStreamer

    model = tiny_model("gpt2")

    class Collect(TextStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.tolist())

        def end(self):
            self.chunks.append("end")

    st = Collect()
    out = verispec.generate(model, [[13]], drafter=PromptLookupDrafter(), max_new_tokens=10, eos_token_id=[],
                            streamer=st)
    assert out.sequences[0].tolist() == reference_greedy(model, [13], 10, None)
    assert st.chunks[0] == [[13]] and st.chunks[-1] == "end"
    assert sum(st.chunks[1:-1], []) == out.sequences[0].tolist()[1:]


def test_text_streamer_prints(capsys):
    """transformers.TextStreamer works unchanged (batch 1)."""
    from transformers import TextStreamer

    class Tok:  # the smallest tokenizer TextStreamer needs
        def decode(self, ids, **kw):
            return "".join(f"<{i}>" for i in ids)

    model = tiny_model("llama")
    out = verispec.generate(model, [[3, 4, 5]], max_new_tokens=6, eos_token_id=[],
                            streamer=TextStreamer(Tok(), skip_prompt=True))
    printed = capsys.readouterr().out
    assert printed.strip() == "".join(f"<{i}>" for i in out.sequences[0].tolist()[3:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_tokens_are_greedy_choices(dtype):
    """bf16/fp16: bit-identity with one-token decoding is not promised (a tree forward multiplies wider
    matrices, so rounding differs), but every emitted token must be the model's greedy choice up to
    rounding, with drafts accepted and rejected along the way."""
    model = tiny_model("llama", dtype=dtype)
    prompts = _prompts((7, 3))
    plain = verispec.generate(model, prompts, max_new_tokens=12, eos_token_id=[])
    refs = {b: s.tolist() for b, s in enumerate(plain.sequences)}
    spec = verispec.generate(model, prompts, drafter=OracleTreeDrafter(refs, VOCAB, seed=4), max_new_tokens=12,
                             eos_token_id=[], attention="mask")
    assert spec.stats.tokens_per_step > 1.2
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    for s, p in zip(spec.sequences, prompts):
        assert len(s) == len(p) + 12
        with torch.no_grad():
            logits = model(s.view(1, -1)).logits[0].float()
        for pos in range(len(p), len(s)):
            row = logits[pos - 1]
            assert row[s[pos]] >= row.max() - tol * row.abs().max(), (dtype, pos)


def test_stats_fields():
    model = tiny_model("llama")
    out = verispec.generate(model, [[1, 2, 3, 1, 2, 3, 1, 2]], drafter=PromptLookupDrafter(), max_new_tokens=16,
                            eos_token_id=[])
    s = out.stats
    assert s.steps >= 1 and s.new_tokens == 16
    assert abs(s.tokens_per_step - 16 / s.request_steps) < 1e-12
    assert set(s.time_s) == {"prefill", "draft", "pack", "forward", "verify", "commit", "update", "total"}
    assert s.time_s["total"] >= sum(v for k, v in s.time_s.items() if k != "total") * 0.99
    assert "tokens/step" in s.summary()
    assert out.new_tokens[0].tolist() == out.sequences[0].tolist()[8:]
    padded = out.padded(0)
    assert padded.shape == (1, 24)


def test_auto_attention_policy():
    """auto = tree attention only where a compiled kernel runs; the torch reference loses to SDPA."""
    from verispec.hf.model import TreeModel

    model = tiny_model("llama")
    assert TreeModel(model).attention == "mask"  # CPU: no compiled tree-attention kernel here
    assert TreeModel(model, attention="tree").attention == "tree"

    class NoInterface(type(model)):
        _supports_attention_backend = False

    model.__class__ = NoInterface
    try:
        assert TreeModel(model).attention == "mask"
        with pytest.raises(ValueError, match="does not route attention"):
            TreeModel(model, attention="tree")
    finally:
        model.__class__ = NoInterface.__mro__[1]


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_triton_backends_end_to_end(arch, device):
    """Tree attention, verify and commit_kv through their Triton kernels (the interpreter on CPU)."""
    model = tiny_model(arch).to(device)
    prompts = _prompts((5, 2, 8), seed=4)
    refs = {b: reference_greedy(model, p, 6, None) for b, p in enumerate(prompts)}
    out = verispec.generate(model, prompts, drafter=OracleTreeDrafter(refs, VOCAB, seed=1), max_new_tokens=6,
                            eos_token_id=[], backend="triton", attention="tree")
    assert [s.tolist() for s in out.sequences] == [refs[b] for b in range(3)]


# (backend, dtype): the CUDA kernels take fp16/bf16 only; near-tie tolerance per dtype.
GPU_GENERATE = [("triton", torch.float32), ("triton", torch.bfloat16), ("triton", torch.float16),
                ("cuda", torch.bfloat16), ("cuda", torch.float16)]
TIE_MARGIN = {torch.float32: 0.0, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def _kernels_match_plain_decoding(backend: str, dtype: torch.dtype, device: str) -> None:
    """The compiled kernels (tree attention, verify, KV commit) against NoDrafter decoding through the
    4D-mask SDPA path, D = 64 (a head dim the CUDA kernels take). fp32: token-identical, and identical
    to HF ``generate``. fp16/bf16: the two attention paths round differently, so they may part at a
    near tie of the model's top-2 logits, and nowhere else."""
    from _generate_utils import assert_greedy_equal_up_to_ties

    model = tiny_model("llama", dtype=dtype, head_dim=64).to(device)
    prompts = _prompts((9, 4, 13), seed=6)
    plain = verispec.generate(model, prompts, max_new_tokens=16, eos_token_id=[], attention="mask")
    refs = {b: s.tolist() for b, s in enumerate(plain.sequences)}
    out = verispec.generate(model, prompts, drafter=OracleTreeDrafter(refs, VOCAB, seed=2), max_new_tokens=16,
                            eos_token_id=[], backend=backend, attention="tree")
    got = [s.tolist() for s in out.sequences]
    if dtype == torch.float32:
        assert got == [refs[b] for b in range(3)]
        assert got == [reference_greedy(model, p, 16, None) for p in prompts]
    else:
        assert_greedy_equal_up_to_ties(model, got, [refs[b] for b in range(3)], [len(p) for p in prompts],
                                       TIE_MARGIN[dtype])
    if got == [refs[b] for b in range(3)]:
        assert out.stats.steps < 16, "the oracle's trees were accepted: fewer steps than tokens"


@pytest.mark.gpu
@pytest.mark.parametrize("backend,dtype", GPU_GENERATE, ids=lambda x: str(x).replace("torch.", ""))
def test_gpu_kernels_match_plain_decoding(backend, dtype):
    _kernels_match_plain_decoding(backend, dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreted_kernels_match_plain_decoding(dtype):
    """The GPU test's own logic on CPU: Triton kernels in the interpreter, D = 64, fp32 and fp16."""
    _kernels_match_plain_decoding("triton", dtype, "cpu")


def test_generate_is_the_function_after_submodule_import():
    """The loop lives in verispec.generation, so importing it never shadows the function."""
    import importlib

    mod = importlib.import_module("verispec.generation")
    assert verispec.generate is mod.generate
    out = verispec.generate(tiny_model("llama"), [[1, 2]], max_new_tokens=2, eos_token_id=[])
    assert isinstance(out, mod.GenerateOutput)


def test_tie_check_rejects_a_real_divergence():
    """The near-tie allowance of the fp16/bf16 comparison cannot hide a wrong token."""
    from _generate_utils import assert_greedy_equal_up_to_ties

    model = tiny_model("llama", head_dim=64)
    prompt = [3, 1, 4, 1, 5]
    ref = reference_greedy(model, prompt, 6, None)
    bad = list(ref)
    bad[7] = (bad[7] + 1) % VOCAB
    assert_greedy_equal_up_to_ties(model, [ref], [ref], [5], 2e-2)
    with pytest.raises(AssertionError, match="not a rounding tie"):
        assert_greedy_equal_up_to_ties(model, [bad], [ref], [5], 2e-2)
