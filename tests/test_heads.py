"""Multi-token heads: drafting keeps greedy output identical and sampling exact, whatever the heads
predict; the hidden state handed to the drafter is the model's own; training lowers the loss; files
round-trip and refuse the wrong model; the early-exit drafter keeps identity."""

from __future__ import annotations

import pytest
import torch
from _generate_utils import VOCAB, reference_greedy, tiny_model
from test_draft_model import _flat, _joint_counts, _pvalue
from test_generate_sampling import V, _exact_joint

import verispec
from verispec.drafters.early_exit import EarlyExitDrafter
from verispec.drafters.heads import HeadsDrafter, best_first_ranks
from verispec.drafters.merge import MergedDrafter
from verispec.heads import init_heads, load
from verispec.heads.train import encode, evaluate, train_heads

NEW = 16


def _random_heads(model, arch="resblock", vocab=None, num_heads=3, seed=0):
    counts = torch.arange(VOCAB, 0, -1) if vocab else None
    heads = init_heads(model, num_heads=num_heads, arch=arch, vocab=vocab, token_counts=counts, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # untrained heads start as the LM head; random ones predict anything
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return heads


def _prompts(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma2"])
@pytest.mark.parametrize("head_arch,vocab,tree", [("resblock", None, "joint"), ("layer", 40, "joint"),
                                                  ("resblock", 40, "accuracy")])
def test_greedy_identity_with_random_heads(arch, head_arch, vocab, tree):
    model = tiny_model(arch)
    heads = _random_heads(model, head_arch, vocab)
    if tree == "accuracy":
        heads.config.accuracy = [[0.5, 0.6, 0.65, 0.7], [0.3, 0.4, 0.45, 0.5], [0.2, 0.25, 0.3, 0.3]]
    prompts = _prompts((7, 1, 12))
    refs = [reference_greedy(model, p, NEW, None) for p in prompts]
    out = verispec.generate(model, prompts, drafter=HeadsDrafter(heads, budget=6, tree=tree), max_new_tokens=NEW,
                            eos_token_id=[])
    assert [s.tolist() for s in out.sequences] == refs
    assert out.stats.draft_nodes > 0


def test_identity_when_heads_are_right_and_drafts_are_accepted():
    """Heads copied from the truth (oracle hidden -> token map is not available, so use an untrained
    head on a model whose greedy output repeats): many drafts accepted, output still identical."""
    model = tiny_model("llama", seed=4)
    heads = init_heads(model, num_heads=2)  # zero-init: every head predicts what the LM head predicts
    prompt = [5] * 9
    ref = reference_greedy(model, prompt, 24, None)
    out = verispec.generate(model, [prompt], drafter=HeadsDrafter(heads, budget=4), max_new_tokens=24, eos_token_id=[])
    assert out.sequences[0].tolist() == ref
    gen = ref[len(prompt):]
    if len(set(gen[-8:])) == 1:  # a fixed point: the untrained head's guess is right every time
        assert out.stats.tokens_per_step > 1.5


def test_drafter_sees_the_models_own_hidden_state():
    """``Context.hidden`` equals the final hidden state of the token before the root from a plain forward."""
    model = tiny_model("qwen2")
    prompts = _prompts((6, 1, 9), seed=3)
    refs = {b: reference_greedy(model, p, 12, None) for b, p in enumerate(prompts)}
    seen = []

    class Spy:  # the true next two tokens plus a wrong sibling: paths of 0, 1 and 2 nodes are accepted
        wants_hidden = True

        def propose(self, contexts):
            seen.extend((list(c.tokens), c.hidden) for c in contexts)
            trees = []
            for c in contexts:
                nxt = refs[c.request][len(c.tokens):len(c.tokens) + 2]
                ok = len(c.tokens) % 3  # vary how much of the truth is offered
                toks = (nxt[:ok] + [(nxt[0] + 1) % VOCAB])[:3] if nxt else []
                trees.append(verispec.DraftTree(toks, list(range(-1, len(toks) - 2)) + [-1])
                             if toks else verispec.DraftTree.empty())
            return trees

        def update(self, accepted):
            pass

    out = verispec.generate(model, prompts, drafter=Spy(), max_new_tokens=12, eos_token_id=[])
    assert [s.tolist() for s in out.sequences] == list(refs.values())
    assert out.stats.tokens_per_step > 1.3
    checked = 0
    for tokens, h in seen:
        if len(tokens) == 1:
            assert h is None
            continue
        with torch.no_grad():
            want = model.model(torch.tensor([tokens[:-1]])).last_hidden_state[0, -1]
        torch.testing.assert_close(h, want, atol=1e-4, rtol=1e-4)
        checked += 1
    assert checked >= 15


def test_best_first_ranks_order_and_closure():
    paths = best_first_ranks([[0.6, 0.3, 0.1], [0.5, 0.4], [0.9]], budget=7)
    scores = [s for _, s in paths]
    assert scores == sorted(scores, reverse=True)
    got = {p for p, _ in paths}
    assert all(p[:-1] in got or len(p) == 1 for p in got)
    assert paths[0] == ((0,), 0.6) and paths[1][0] == (0, 0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_head_trees_match_the_target(temperature):
    """Sampled trees with draft probabilities: the first two tokens follow the target's distribution,
    with accepted and rejected drafts; misreported probabilities would fail this (test_draft_model)."""
    model = _flat(tiny_model("llama", seed=3, vocab=V))
    heads = _random_heads(model, num_heads=2, seed=2)
    with torch.no_grad():
        for p in heads.parameters():
            p.mul_(0.2)
    drafter = HeadsDrafter(heads, budget=4, tree="joint", temperature=temperature, seed=5)
    prompt, n = [1, 4, 2, 6], 3000
    counts, stats = _joint_counts(model, drafter, n, temperature, prompt, seed=77)
    joint = _exact_joint(model, prompt, temperature, None, None)
    assert _pvalue(counts, joint, n) > 1e-3
    assert 0 < stats.acceptance_rate < 1


def test_merged_with_prompt_lookup_keeps_identity():
    model = tiny_model("gemma2")
    heads = _random_heads(model)
    prompts = [(p * 3)[:14] for p in _prompts((5, 7))]
    refs = [reference_greedy(model, p, NEW, None) for p in prompts]
    drafter = MergedDrafter([HeadsDrafter(heads, budget=4), verispec.PromptLookupDrafter(num_tokens=4)], budget=6)
    out = verispec.generate(model, prompts, drafter=drafter, max_new_tokens=NEW, eos_token_id=[])
    assert [s.tolist() for s in out.sequences] == refs


def test_merging_a_sampled_tree_is_refused():
    model = tiny_model("llama")
    heads = _random_heads(model)
    drafter = MergedDrafter([HeadsDrafter(heads, temperature=1.0), verispec.NoDrafter()], budget=4)
    with pytest.raises(ValueError, match="sampled tree"):
        verispec.generate(model, _prompts((5,)), drafter=drafter, max_new_tokens=4, temperature=1.0, eos_token_id=[])


def test_save_load_round_trip(tmp_path):
    model = tiny_model("qwen2")
    heads = _random_heads(model, "layer", vocab=32)
    heads.config.accuracy = [[0.1, 0.2], [0.05, 0.1], [0.0, 0.1]]
    heads.save(tmp_path)
    back = load(tmp_path, model)
    h = torch.randn(5, 48)
    torch.testing.assert_close(back(h), heads(h), atol=0, rtol=0)
    assert back.config == heads.config and torch.equal(back.vocab_ids, heads.vocab_ids)


def test_wrong_model_is_refused(tmp_path):
    model = tiny_model("llama")
    _random_heads(model).save(tmp_path)
    with pytest.raises(ValueError, match="vocabulary of 97 tokens, but this model's has 50"):
        load(tmp_path, tiny_model("llama", vocab=50))
    with pytest.raises(ValueError, match="LM head's weights differ"):
        load(tmp_path, tiny_model("llama", seed=9))
    other = tiny_model("gpt2")
    other.config.n_embd = 64
    other.config.hidden_size = 64
    with pytest.raises(ValueError, match="hidden size 48, but this model's is 64"):
        load(tmp_path, other)
    with pytest.raises(FileNotFoundError, match="not a heads directory"):
        load(tmp_path / "nothing", model)


def test_training_lowers_the_loss():
    model = tiny_model("llama", seed=1)
    # A corpus with structure the heads can learn: a short cycle, so the tokens 2 and 3 ahead are
    # functions of the current one.
    seqs = [[(7 * i + s) % VOCAB for i in range(40)] for s in range(12)]
    enc = encode(model, seqs, num_heads=2)
    heads = init_heads(model, num_heads=2)
    before = evaluate(heads, model, enc)[:, 0]
    run = train_heads(heads, model, enc, steps=100, batch_size=64, lr=1e-2, log=lambda s: None)
    after = evaluate(heads, model, enc)[:, 0]
    assert run["final_loss"] < 0.6 * run["first_loss"], run
    assert (after > before + 0.2).all(), (before, after, run)


def test_early_exit_drafter_keeps_identity():
    for arch in ("llama", "gpt2"):
        model = tiny_model(arch)
        model.config.num_hidden_layers = 2
        heads = init_heads(model, num_heads=1, exit_layer=1)
        with torch.no_grad():
            heads.adapter.linear.weight.normal_(0, 0.2)
        prompts = _prompts((6, 9), seed=4)
        refs = [reference_greedy(model, p, NEW, None) for p in prompts]
        out = verispec.generate(model, prompts, drafter=EarlyExitDrafter(model, heads, num_tokens=3),
                                max_new_tokens=NEW, eos_token_id=[])
        assert [s.tolist() for s in out.sequences] == refs, arch
        assert out.stats.draft_nodes > 0
        # the full model is untouched by the shallow view
        assert len(getattr(model.base_model, "layers", None) or model.base_model.h) == 2


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_handing_over_the_hidden_state_adds_no_host_sync(temperature):
    """The step stays at one host synchronisation with a drafter that reads hidden states (deterministic
    trees: checking sampled trees' probs rows is host work of its own, for any sampled drafter)."""
    from test_generate_syncs import _syncs_per_step

    model = tiny_model("llama")
    drafter = HeadsDrafter(_random_heads(model), budget=4)
    per_step, calls, steps = _syncs_per_step(model, drafter, temperature=temperature, seed=3, attention="mask")
    assert steps > 1
    assert per_step <= 1, f"{per_step:.1f} host syncs per step (bound 1):\n" + "\n".join(calls[:40])


def test_full_vocab_drafter_leaves_the_heads_alone():
    model = tiny_model("llama")
    heads = _random_heads(model, vocab=40)
    d = HeadsDrafter(heads, full_vocab=True, tree="joint")
    assert heads.use_full_vocab is False and d.heads.use_full_vocab is True
    h = torch.randn(2, 48)
    assert heads(h).shape[-1] == 40 and d.heads(h).shape[-1] == VOCAB
