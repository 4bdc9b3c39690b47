"""The vLLM proposers' logic on fake vLLM inputs (no vLLM needed): options, chains from trees, chain
length from acceptance, rows of a changing batch tracked as requests, start-up errors.

The fake engine below does what vLLM's runner does around a ``custom_class`` proposer: keeps each
request's tokens in a ``token_ids_cpu`` row, verifies the proposed chain greedily against a known target
output (the model), emits accepted tokens plus one, and compacts rows when requests finish.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from verispec.datastore import Datastore
from verispec.drafters import EMPTY
from verispec.integrations.vllm import (
    ChainPolicy,
    EditsProposer,
    RetrievalProposer,
    VerispecProposer,
    best_chain,
    check_tokenizer,
    read_options,
)
from verispec.tree import DraftTree

VOCAB = 64


def fake_config(k=4, max_model_len=512, additional_config=None, vocab=VOCAB):
    model_config = SimpleNamespace(max_model_len=max_model_len, get_vocab_size=lambda: vocab, tokenizer=None)
    return SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=k), model_config=model_config,
                           additional_config=additional_config or {})


class FakeEngine:
    """Greedy verification of chains against fixed target outputs, with vLLM's row layout."""

    def __init__(self, proposer, max_model_len=512):
        self.p = proposer
        self.buf = np.zeros((8, max_model_len), dtype=np.int32)
        self.reqs: list[dict] = []  # row order
        self.sampled: list[list[int]] = []
        self.drafts: list[list[int]] = []
        self.proposed: list[int] = []  # chain lengths of every call
        self.limits: list[int] = []  # context + chain lengths of every call

    def add(self, prompt, target, prefill_steps=1):
        self.reqs.append({"tokens": list(prompt), "target": list(target), "out": [], "prefill": prefill_steps})
        self.sampled.append([])
        self.drafts.append([])

    def step(self):
        for r, req in enumerate(self.reqs):
            new = []
            if req["prefill"] > 0:
                req["prefill"] -= 1
                if req["prefill"] == 0:
                    new = [req["target"][0]]
            else:
                for t in self.drafts[r]:
                    if len(req["out"]) + len(new) < len(req["target"]) and t == req["target"][len(req["out"]) + len(new)]:
                        new.append(t)
                    else:
                        break
                if len(req["out"]) + len(new) < len(req["target"]):
                    new.append(req["target"][len(req["out"]) + len(new)])
            req["out"] += new
            req["tokens"] += new
            self.sampled[r] = new
        # finished requests leave; the last row moves into the hole (as vLLM's condense does)
        r = 0
        while r < len(self.reqs):
            if len(self.reqs[r]["out"]) >= len(self.reqs[r]["target"]):
                self.done.append(self.reqs[r])
                last = len(self.reqs) - 1
                self.reqs[r], self.sampled[r] = self.reqs[last], self.sampled[last]
                self.reqs.pop()
                self.sampled.pop()
                continue
            r += 1
        for r, req in enumerate(self.reqs):
            self.buf[r, :len(req["tokens"])] = req["tokens"]
        n = np.array([len(q["tokens"]) for q in self.reqs] + [0], dtype=np.int32)
        self.drafts = self.p.propose([list(s) for s in self.sampled], n, self.buf)
        assert len(self.drafts) == len(self.reqs)
        for r, d in enumerate(self.drafts):
            assert len(d) <= self.p.k
            if not self.sampled[r]:
                assert d == []
        self.proposed += [len(d) for d in self.drafts]
        self.limits += [int(n[r]) + len(d) for r, d in enumerate(self.drafts)]

    def run(self, max_steps=500):
        self.done = []
        for _ in range(max_steps):
            if not self.reqs:
                return self.done
            self.step()
        raise AssertionError("requests did not finish")


class EchoDrafter:
    """Drafts the next tokens of a known target continuation; records what it was told."""

    def __init__(self, targets):
        self.targets = targets  # prompt tuple -> target output
        self.contexts, self.updates, self.forgotten = [], [], []

    def propose(self, contexts):
        trees = []
        for c in contexts:
            self.contexts.append((c.request, list(c.tokens)))
            for prompt, target in self.targets.items():
                if tuple(c.tokens[:len(prompt)]) == prompt:
                    done = len(c.tokens) - len(prompt)
                    nxt = target[done:done + 6]
                    trees.append(DraftTree(nxt, list(range(-1, len(nxt) - 1))) if nxt else EMPTY)
                    break
            else:
                trees.append(EMPTY)
        return trees

    def update(self, accepted):
        self.updates += list(accepted)

    def forget(self, requests):
        self.forgotten += list(requests)


class Echo(VerispecProposer):
    def make_drafter(self, options, vllm_config):
        return EchoDrafter(vllm_config.targets)


def echo(targets, k=4, **kw):
    cfg = fake_config(k=k, **kw)
    cfg.targets = targets
    return Echo(cfg)


# -- options -----------------------------------------------------------------------------------------------------
def test_options_defaults_env_and_config_precedence():
    assert read_options(None, {})["min_accept"] == 0.3
    assert read_options(None, {"VERISPEC_DATASTORE": "/x.vsds"})["datastore"] == "/x.vsds"
    opts = read_options({"verispec": {"datastore": "/a.vsds", "prompt_lookup": "false"}},
                        {"VERISPEC_DATASTORE": "/b.vsds", "VERISPEC_BUDGET": "12"})
    assert opts["datastore"] == "/a.vsds" and opts["budget"] == 12 and opts["prompt_lookup"] is False


@pytest.mark.parametrize("cfg, env, msg", [
    ({"verispec": {"datastor": "/x"}}, {}, "unknown verispec option"),
    ({"verispec": {"budget": "many"}}, {}, "'budget' .* must be int"),
    ({}, {"VERISPEC_PROMPT_LOOKUP": "maybe"}, "VERISPEC_PROMPT_LOOKUP must be true or false"),
    ({"verispec": {"min_accept": 2}}, {}, "min_accept"),
    ({"verispec": "x.vsds"}, {}, "must be a dict"),
])
def test_options_errors(cfg, env, msg):
    with pytest.raises(ValueError, match=msg):
        read_options(cfg, env)


# -- chains --------------------------------------------------------------------------------------------------------
def test_best_chain_follows_highest_scoring_child():
    #        root
    #   5(.6)      7(.3)
    #  8(.5) 9(.1)   4(.3)
    # 2(.4)
    tree = DraftTree([5, 7, 8, 9, 4, 2], [-1, -1, 0, 0, 1, 2], [0.6, 0.3, 0.5, 0.1, 0.3, 0.4])
    assert best_chain(tree) == ([5, 8, 2], pytest.approx([0.6, 0.5, 0.4]))
    assert best_chain(EMPTY) == ([], [])
    assert best_chain(DraftTree([3, 4], [-1, 0]))[0] == [3, 4]  # unscored: every node counts as 1


def test_chain_policy_lengths_follow_acceptance():
    pol = ChainPolicy(min_accept=0.3)
    flat = [1.0] * 16
    fresh = pol.length(flat, 0, 0, 16)
    hits = misses = 0.0
    for _ in range(20):  # everything accepted: chains grow to the cap
        hits, misses = pol.observe(hits, misses, 8, 8)
    assert pol.length(flat, hits, misses, 16) == 16 > fresh
    assert pol.length(flat, hits, misses, 5) == 5
    hits = misses = 0.0
    for _ in range(20):  # everything rejected: no draft
        hits, misses = pol.observe(hits, misses, 2, 0)
    assert pol.length(flat, hits, misses, 16) == 0
    for _ in range(30):  # not drafting: back to the prior, so it tries again
        hits, misses = pol.observe(hits, misses, 0, 0)
    assert 0 < pol.length(flat, hits, misses, 16) <= fresh
    # A branch point in the drafter's scores cuts the chain there.
    assert pol.length([1.0, 1.0, 0.1, 0.1], 100.0, 0.0, 16) == 2


# -- rows of vLLM's batch ---------------------------------------------------------------------------------------
def test_ragged_batch_with_finishing_requests_keeps_each_requests_state():
    rng = np.random.default_rng(1)
    targets = {}
    for length, out in [(3, 30), (11, 7), (6, 45), (20, 2)]:
        targets[tuple(rng.integers(0, VOCAB, length).tolist())] = rng.integers(0, VOCAB, out).tolist()
    p = echo(targets, k=4)
    eng = FakeEngine(p)
    for i, (prompt, target) in enumerate(targets.items()):
        eng.add(prompt, target, prefill_steps=1 + i % 3)  # chunked prefill: empty sampled lists first
    done = eng.run()
    assert sorted(len(d["out"]) for d in done) == sorted(len(t) for t in targets.values())
    # Every context the drafter saw is exactly a prompt plus a prefix of its target, under one id.
    ids = {}
    for rid, toks in p.drafter.contexts:
        prompt = next(pr for pr in targets if tuple(toks[:len(pr)]) == pr)
        assert toks[len(prompt):] == targets[prompt][:len(toks) - len(prompt)]
        assert ids.setdefault(prompt, rid) == rid
    assert len(ids) == len(targets)
    # The drafter was told what vLLM accepted (perfect drafts: every proposed token).
    assert all(a.num_accepted == len(a.tokens) - 1 for a in p.drafter.updates if not a.finished)
    # Perfect drafts are accepted except past a request's end.
    assert 0.9 * p.stats["drafted"] <= p.stats["accepted"] <= p.stats["drafted"]
    assert max(eng.proposed) == 4


def test_request_finishing_mid_chain_and_max_model_len():
    prompt = (1, 2, 3)
    p = echo({prompt: list(range(10, 40))}, k=8, max_model_len=20)
    eng = FakeEngine(p, max_model_len=20)
    eng.add(prompt, list(range(10, 27)))  # 3 + 17 tokens = max_model_len
    done = eng.run()
    assert done[0]["out"] == list(range(10, 27))
    assert max(eng.proposed) == 6  # EchoDrafter's longest guess
    # No chain runs past max_model_len, and none is asked for at it.
    assert max(eng.limits) <= 20
    assert all(len(t) < 20 for _, t in p.drafter.contexts)


def test_rejected_drafts_shrink_chains_to_nothing():
    prompt = (5, 6)
    wrong = {prompt: [0] * 200}  # the drafter always guesses 0
    p = echo(wrong, k=6)
    eng = FakeEngine(p)
    eng.add(prompt, list(range(1, 61)))
    eng.run()
    assert eng.proposed[0] > 0
    assert sum(eng.proposed[-20:]) < sum(eng.proposed[:20])


def test_moved_row_is_recognised():
    a, b = (1, 1, 1), (2, 2, 2)
    p = echo({a: [7] * 50, b: [8] * 50}, k=2)
    buf = np.zeros((4, 64), dtype=np.int32)
    buf[0, :4], buf[1, :4] = [1, 1, 1, 7], [2, 2, 2, 8]
    p.propose([[7], [8]], np.array([4, 4]), buf)
    ids = {tuple(t[:3]): r for r, t in p.drafter.contexts}
    # b moves to row 0 (a left the batch) and emitted two tokens.
    buf[0, :6] = [2, 2, 2, 8, 8, 8]
    p.propose([[8, 8]], np.array([6]), buf)
    rid, toks = p.drafter.contexts[-1]
    assert rid == ids[b] and toks == [2, 2, 2, 8, 8, 8]
    assert p.drafter.updates[-1].request == ids[b] and p.drafter.updates[-1].num_accepted == 1


def test_idle_requests_are_finished_after_a_while():
    p = echo({(1, 2): [3] * 10}, k=2)
    p.keep_idle = 2
    buf = np.zeros((2, 16), dtype=np.int32)
    buf[0, :3] = [1, 2, 3]
    p.propose([[3]], np.array([3]), buf)
    for _ in range(3):
        p.propose([], np.array([0]), buf)
    assert [u.finished for u in p.drafter.updates] == [True]
    assert p.drafter.forgotten == [p.drafter.updates[0].request]


# -- the real proposers on fake configs ----------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    phrase = rng.integers(0, VOCAB, 40).tolist()
    docs = [rng.integers(0, VOCAB, 50).tolist() + phrase + rng.integers(0, VOCAB, 20).tolist() for _ in range(6)]
    path = tmp_path / "c.vsds"
    Datastore.build(docs, path, vocab_size=VOCAB, progress=False)
    return path, phrase


def test_retrieval_proposer_drafts_from_the_datastore(corpus):
    path, phrase = corpus
    p = RetrievalProposer(fake_config(k=6, additional_config={"verispec": {"datastore": str(path),
                                                                            "check_tokenizer": False}}))
    p.load_model(object())
    buf = np.zeros((2, 128), dtype=np.int32)
    ctx = [63, 62, 61] + phrase[:10]
    buf[0, :len(ctx)] = ctx
    out = p.propose([[ctx[-1]], []], np.array([len(ctx), 0]), buf)
    assert out[1] == [] and 1 <= len(out[0]) <= 6
    assert out[0] == phrase[10:10 + len(out[0])]


def test_retrieval_proposer_env_var(corpus, monkeypatch):
    path, _ = corpus
    monkeypatch.setenv("VERISPEC_DATASTORE", str(path))
    monkeypatch.setenv("VERISPEC_CHECK_TOKENIZER", "0")
    assert RetrievalProposer(fake_config()).drafter.datastore.path == str(path)


def test_retrieval_proposer_start_up_errors(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("VERISPEC_DATASTORE", raising=False)
    with pytest.raises(ValueError, match="needs a datastore.*VERISPEC_DATASTORE"):
        RetrievalProposer(fake_config())
    with pytest.raises(FileNotFoundError, match="missing.vsds does not exist"):
        RetrievalProposer(fake_config(additional_config={"verispec": {"datastore": str(tmp_path / "missing.vsds")}}))
    path, _ = corpus
    with pytest.raises(ValueError, match="vocab_size 64 .* 32 tokens"):
        RetrievalProposer(fake_config(vocab=32, additional_config={"verispec": {"datastore": str(path)}}))
    bad = tmp_path / "bad.vsds"
    bad.write_bytes(b"not a datastore" * 10)
    with pytest.raises(ValueError):
        RetrievalProposer(fake_config(additional_config={"verispec": {"datastore": str(bad)}}))
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        RetrievalProposer(fake_config(k=0))


def test_edits_proposer_copies_the_prompt():
    code = list(range(2, 62)) * 2
    p = EditsProposer(fake_config(k=8))
    eng = FakeEngine(p)
    eng.add([1, 2] + code + [3], code)  # the model rewrites the code unchanged
    eng.run()
    # Copying: after a short start every step verifies long chains, and they are accepted.
    assert max(eng.proposed) == 8
    assert p.stats["accepted"] >= 0.8 * p.stats["drafted"] > 0


def test_no_vllm_import():
    # The integration runs inside vLLM but never imports it; `import verispec` does not import it either.
    code = ("import sys, verispec, verispec.integrations.vllm; "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- tokenizer check -------------------------------------------------------------------------------------------
class CharPairTokenizer:
    """A tiny BPE-like tokenizer: ids 0..25 are letters, 26 is space, 27.. are the merged pairs of
    frequent letters, encoded greedily, so only its own segmentation round-trips."""

    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [a + b for a in "etaoinshr" for b in "etaoinshr"]

    def __len__(self):
        return 27 + len(self.pairs)

    def decode(self, ids, **_):
        table = list(self.letters) + [" "] + self.pairs
        return "".join(table[i] for i in ids)

    def encode(self, text, **_):
        out, i = [], 0
        while i < len(text):
            if text[i:i + 2] in self.pairs:
                out.append(27 + self.pairs.index(text[i:i + 2]))
                i += 2
            else:
                out.append(26 if text[i] == " " else self.letters.index(text[i]))
                i += 1
        return out


def test_check_tokenizer_tells_own_ids_from_foreign_ones():
    tok = CharPairTokenizer()
    rng = np.random.default_rng(0)
    words = ["the", "other", "end", "of", "then", "tested", "reading", "rather", "at", "in", "on", "tore"]
    docs = [tok.encode(" ".join(rng.choice(words, 200))) for _ in range(4)]
    ds = Datastore.from_documents(docs, vocab_size=len(tok))
    assert check_tokenizer(ds, tok, "own.vsds") == 1.0
    perm = rng.permutation(len(tok))
    foreign = Datastore.from_documents([perm[np.array(d)] for d in docs], vocab_size=len(tok))
    with pytest.raises(ValueError, match="foreign.vsds does not look tokenized with the served model's"):
        check_tokenizer(foreign, tok, "foreign.vsds")


def test_best_chain_on_tensor_trees():
    # Trees from the datastore hold tensors (float32 scores).
    tree = DraftTree(torch.tensor([1, 2]), torch.tensor([-1, 0]), torch.tensor([0.5, 0.25]))
    assert best_chain(tree) == ([1, 2], [0.5, 0.25])


# -- the edits proposer: the prompt as the prediction, resync after an edit ----------------------------------
def _lines(n, start=100):
    # token "lines": 6 tokens each, the last one a newline token 1
    return [[start + 10 * i + j for j in range(5)] + [1] for i in range(n)]


@pytest.mark.parametrize("edit", ["copy", "insert", "delete", "change"])
def test_edits_proposer_resyncs_after_an_edit(edit):
    from verispec.integrations.vllm import make_edits_drafter

    code = _lines(30)
    out = [list(x) for x in code]
    if edit == "insert":
        out.insert(10, [7, 8, 9, 10, 11, 1])
    elif edit == "delete":
        del out[10]
    elif edit == "change":
        out[10][2] = 5
    prompt = [2, 3] + [t for ln in code for t in ln] + [4]
    target = [t for ln in out for t in ln]

    class Edits(VerispecProposer):
        def make_drafter(self, options, vllm_config):
            return make_edits_drafter(max_depth=self.k, budget=self.k + 8)

    p = Edits(fake_config(k=16, max_model_len=1024))
    eng = FakeEngine(p, max_model_len=1024)
    eng.add(prompt, target)
    done = eng.run()
    assert done[0]["out"] == target
    steps = len(eng.proposed)
    # 180 tokens: copying everywhere except around the edit takes few steps (plain decoding: 180).
    assert steps <= 30, (edit, steps, eng.proposed)
    assert p.stats["accepted"] >= 0.75 * p.stats["drafted"]
