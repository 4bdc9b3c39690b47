"""Exactness of mode="exact": chi-square goodness of fit of emitted token sequences against the target.

Each test simulates many independent requests at once (one batched verify call per decoding step, a
different Philox offset per request and step). A toy target assigns logits to every context of up to
S tokens over a small vocabulary; drafters propose trees whose node rows carry the target logits of their
path, exactly as a model forward would. The first S emitted tokens of every request are counted and
compared with the product of the target's conditionals, computed independently here.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

import verispec
from verispec.ops import _philox
from verispec.ops import verify as vmod
from verispec.ops.tree_buffers import tree_buffers

pytestmark = pytest.mark.op("verify")

P_MIN = 1e-4  # fail when the fit is this unlikely; every test below also shows a broken sampler failing


def _filtered(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Independent plain-Python statement of the target distribution of one row (float64)."""
    l = logits.double().tolist()
    V = len(l)
    if temperature == 0:
        a = max(range(V), key=lambda i: (l[i], -i))
        return torch.tensor([1.0 if i == a else 0.0 for i in range(V)], dtype=torch.float64)
    keep = [True] * V
    if top_k is not None and 0 < top_k < V:
        kth = sorted(l, reverse=True)[top_k - 1]
        keep = [x >= kth for x in l]
    m = max(l)
    w = [math.exp((x - m) / temperature) if k else 0.0 for x, k in zip(l, keep)]
    z = sum(w)
    p = [x / z for x in w]
    if top_p is not None and top_p < 1:
        # keep token v iff the mass of strictly more likely tokens is below top_p
        p = [pv if k and sum(pu for pu in p if pu > pv) < top_p else 0.0 for pv, k in zip(p, keep)]
        z = sum(p)
        p = [x / z for x in p]
    return torch.tensor(p, dtype=torch.float64)


class ToyTarget:
    """Logits for every context of fewer than S tokens (longer contexts: row 0, never counted)."""

    def __init__(self, V: int, S: int, gen: torch.Generator, scale: float = 1.0, logits=None):
        self.V, self.S = V, S
        self.base = [sum(V**i for i in range(l)) for l in range(S + 1)]
        n = self.base[S]
        self.L = torch.randn(n, V, generator=gen, dtype=torch.float64).float() * scale if logits is None else logits

    def row(self, length: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        base = torch.tensor(self.base, dtype=torch.long)[length.clamp(max=self.S - 1)]
        return torch.where(length < self.S, base + code, torch.zeros_like(code))

    def expected(self, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
        probs = torch.stack([_filtered(self.L[r], temperature, top_k, top_p) for r in range(self.L.shape[0])])
        out = torch.empty(self.V**self.S, dtype=torch.float64)
        for i, seq in enumerate(itertools.product(range(self.V), repeat=self.S)):
            pr, code = 1.0, 0
            for l, t in enumerate(seq):
                pr *= float(probs[self.base[l] + code, t])
                code += t * self.V**l
            out[i] = pr
        return out


def simulate(
    target: ToyTarget,
    parents: list[int],
    n: int,
    draft,  # (ctx_len [n], ctx_code [n], node, parent_tokens) -> (tokens [n], q [n, V] or None)
    seed: int = 1234,
    **verify_kw,
) -> torch.Tensor:
    """Run decoding steps for n requests until each has S tokens; returns the sequences [n, S]."""
    V, S = target.V, target.S
    K = len(parents)
    depth = []
    for p in parents:
        depth.append(1 if p < 0 else depth[p] + 1)
    par_t = torch.tensor(parents, dtype=torch.int32).repeat(n)
    cu = (torch.arange(n + 1, dtype=torch.int32) * K).to(torch.int32)
    buf = tree_buffers(par_t, cu, max_rows=K + 1, validate=False)
    max_depth = max(depth, default=0)
    seqs = torch.full((n, S), -1, dtype=torch.long)
    length = torch.zeros(n, dtype=torch.long)
    code = torch.zeros(n, dtype=torch.long)
    bidx = torch.arange(n)
    for step in range(S):
        toks = torch.zeros(n, K, dtype=torch.long)
        node_len = torch.zeros(n, K, dtype=torch.long)
        node_code = torch.zeros(n, K, dtype=torch.long)
        qs = []
        for j, p in enumerate(parents):
            plen = length if p < 0 else node_len[:, p]
            pcode = code if p < 0 else node_code[:, p]
            t, q = draft(plen, pcode, j)
            toks[:, j] = t
            qs.append(q)
            node_len[:, j] = plen + 1
            node_code[:, j] = pcode + t * (V ** plen.clamp(max=S))
        rows = torch.cat([target.row(length, code).unsqueeze(1), target.row(node_len, node_code)], dim=1)
        logits = target.L[rows.reshape(-1)]
        dp = None
        if K and qs[0] is not None:
            dp = torch.stack(qs, dim=1).reshape(n * K, V)
        flat = (toks.reshape(-1).to(torch.int32), par_t, cu)
        res = verispec.verify(
            logits, flat, mode="exact", draft_probs=dp, buffers=buf, max_depth=max_depth, validate=False,
            seed=seed, offset=bidx * S + step, backend="torch", **verify_kw,
        )
        emitted = res.tokens.long()
        count = res.num_accepted.long() + 1
        for i in range(max_depth + 1):
            take = (i < count) & (length < S)
            seqs[bidx[take], length[take]] = emitted[take, i]
            code = torch.where(take, code + emitted[:, i].clamp(min=0) * V ** length.clamp(max=S), code)
            length = length + take.long()
        if bool((length >= S).all()):
            break
    return seqs


def fit(seqs: torch.Tensor, V: int, expected: torch.Tensor) -> float:
    """p-value of the chi-square fit; asserts impossible sequences never occur."""
    S = seqs.shape[1]
    codes = (seqs * torch.tensor([V ** (S - 1 - i) for i in range(S)])).sum(1)  # lexicographic order
    obs = torch.bincount(codes, minlength=V**S).double()
    n = seqs.shape[0]
    exp = expected * n
    impossible = expected == 0
    assert obs[impossible].sum() == 0, f"impossible sequences emitted: {impossible.nonzero().flatten().tolist()}"
    obs, exp = obs[~impossible], exp[~impossible]
    small = exp < 5
    if bool(small.any()):
        obs = torch.cat([obs[~small], obs[small].sum().reshape(1)])
        exp = torch.cat([exp[~small], exp[small].sum().reshape(1)])
    exp = exp * (obs.sum() / exp.sum())
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)


def uniform_drafter(V, gen):
    def draft(plen, pcode, j):
        return torch.randint(0, V, plen.shape, generator=gen), None

    return draft


def model_drafter(target: ToyTarget, gen, sharp=1.0, support=None):
    """Draft model: its own random table q(.|ctx); tokens drawn from it (siblings i.i.d.)."""
    Q = torch.softmax(torch.randn(target.L.shape, generator=gen) * sharp, dim=1)
    if support is not None:  # zero-probability entries in q
        mask = torch.zeros_like(Q)
        mask[:, support] = 1
        Q = Q * mask
        Q = Q / Q.sum(1, keepdim=True)

    def draft(plen, pcode, j):
        q = Q[target.row(plen, pcode)]
        t = torch.multinomial(q, 1, generator=gen).squeeze(1)
        return t, q

    return draft


N = 100_000
CHAIN2 = [-1, 0]
TREE_DUP = [-1, -1, -1, 0, 0, 1]  # three root children, two under the first, one under the second


def _run(target, parents, draft, **kw):
    return simulate(target, parents, N, draft, **kw)


def test_chain_with_draft_probs_three_tokens():
    gen = torch.Generator().manual_seed(1)
    tg = ToyTarget(4, 3, gen)
    seqs = _run(tg, [-1, 0, 1], model_drafter(tg, gen))
    assert fit(seqs, 4, tg.expected()) > P_MIN


def test_multi_draft_iid_siblings_tree():
    gen = torch.Generator().manual_seed(2)
    tg = ToyTarget(5, 2, gen, scale=1.5)
    seqs = _run(tg, TREE_DUP, model_drafter(tg, gen))
    assert fit(seqs, 5, tg.expected()) > P_MIN


def test_deterministic_drafts_with_duplicate_siblings():
    gen = torch.Generator().manual_seed(3)
    tg = ToyTarget(4, 3, gen)

    def draft(plen, pcode, j):  # siblings 0 and 1 always propose the same token
        t = torch.randint(0, 4, plen.shape, generator=gen)
        return (t if j != 1 else draft.last), None

    def wrapped(plen, pcode, j):
        t, q = draft(plen, pcode, j)
        draft.last = t
        return t, q

    seqs = _run(tg, [-1, -1, 0, 0, 2], wrapped)
    assert fit(seqs, 4, tg.expected()) > P_MIN


def test_first_token_random_trees_deterministic():
    gen = torch.Generator().manual_seed(4)
    tg = ToyTarget(7, 1, gen, scale=1.3)
    seqs = _run(tg, [-1, -1, 0, -1, 1], uniform_drafter(7, gen))
    assert fit(seqs, 7, tg.expected()) > P_MIN


def test_draft_on_target_argmax_only():
    gen = torch.Generator().manual_seed(5)
    tg = ToyTarget(4, 2, gen, scale=0.7)

    def draft(plen, pcode, j):
        return tg.L[tg.row(plen, pcode)].argmax(1), None

    seqs = _run(tg, [-1, 0], draft)
    assert fit(seqs, 4, tg.expected()) > P_MIN


def test_draft_outside_target_support_top_k():
    gen = torch.Generator().manual_seed(6)
    tg = ToyTarget(6, 2, gen)

    def draft(plen, pcode, j):  # always the target's least likely token: outside its top-3
        return tg.L[tg.row(plen, pcode)].argmin(1), None

    seqs = _run(tg, [-1, 0, -1], draft, top_k=3)
    assert fit(seqs, 6, tg.expected(top_k=3)) > P_MIN


def test_zero_probability_entries_in_draft_probs():
    gen = torch.Generator().manual_seed(7)
    tg = ToyTarget(5, 2, gen)
    seqs = _run(tg, [-1, -1, 0], model_drafter(tg, gen, sharp=2.0, support=[1, 3]))
    assert fit(seqs, 5, tg.expected()) > P_MIN


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.6, None, None), (1.4, 3, None), (1.0, None, 0.7), (0.8, 4, 0.8)])
def test_temperature_top_k_top_p(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(8)
    tg = ToyTarget(6, 2, gen)
    seqs = _run(tg, TREE_DUP, model_drafter(tg, gen), temperature=temperature, top_k=top_k, top_p=top_p)
    assert fit(seqs, 6, tg.expected(temperature, top_k, top_p)) > P_MIN


@pytest.mark.parametrize("kw", [dict(temperature=1e-3), dict(top_k=1), dict(top_p=1e-6), dict(temperature=0.0)])
def test_degenerate_targets_are_greedy(kw):
    gen = torch.Generator().manual_seed(9)
    tg = ToyTarget(5, 2, gen, scale=2.0)
    seqs = simulate(tg, [-1, 0, -1], 5000, model_drafter(tg, gen), **kw)
    a0 = int(tg.L[0].argmax())
    a1 = int(tg.L[tg.row(torch.tensor([1]), torch.tensor([a0]))[0]].argmax())
    assert (seqs[:, 0] == a0).all() and (seqs[:, 1] == a1).all()


def test_temperature_zero_matches_greedy_mode():
    gen = torch.Generator().manual_seed(10)
    logits = torch.randn(9, 50, generator=gen)
    trees = [verispec.DraftTree([3, 4, 5], [-1, 0, -1]), verispec.DraftTree([1, 2, 3, 4], [-1, 0, 1, -1])]
    a = verispec.verify(logits, trees, mode="greedy", backend="torch")
    b = verispec.verify(logits, trees, mode="exact", temperature=0.0, seed=3, backend="torch")
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.accepted_nodes, b.accepted_nodes)


# ---- the tests can fail: broken samplers are rejected --------------------------------------------


def test_shared_random_numbers_are_detected(monkeypatch):
    """If the residual draw reused the accept tests' random numbers, the output would be biased."""
    gen = torch.Generator().manual_seed(11)
    tg = ToyTarget(4, 1, gen, logits=torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])))

    def draft(plen, pcode, j):
        return torch.full(plen.shape, 1), None

    good = _run(tg, [-1], draft)
    assert fit(good, 4, tg.expected()) > P_MIN
    monkeypatch.setattr(_philox, "STREAM_RESIDUAL", _philox.STREAM_ACCEPT)
    bad = _run(tg, [-1], draft)
    assert fit(bad, 4, tg.expected()) < P_MIN


def test_resampling_from_target_instead_of_residual_is_detected(monkeypatch):
    gen = torch.Generator().manual_seed(12)
    tg = ToyTarget(4, 2, gen)
    monkeypatch.setattr(vmod, "_residual_step", lambda p_res, q: p_res)
    seqs = _run(tg, [-1, 0], model_drafter(tg, gen))
    assert fit(seqs, 4, tg.expected()) < P_MIN


def test_accept_uniforms_and_residual_streams_differ():
    seed = torch.tensor([5], dtype=torch.int64)
    off = torch.tensor([9], dtype=torch.int64)
    u = _philox.accept_uniforms(seed, off, torch.arange(4))
    e = _philox.residual_exponentials(seed, off, 16)
    assert ((u > 0) & (u <= 1)).all() and (e > 0).all()
    # same counter index, different streams -> different bits
    k0, k1, o0, o1 = 5, 0, 9, 0
    a = _philox.philox4x32(0, _philox.STREAM_ACCEPT, o0, o1, k0, k1)[0]
    b = _philox.philox4x32(0, _philox.STREAM_RESIDUAL, o0, o1, k0, k1)[0]
    assert int(a) != int(b)


def _without_replacement_drafter(target: ToyTarget, gen, honest: bool):
    """Two root children sampled without replacement from the draft q, then one child each from q.
    honest: the second child's row is q without the first child's token, renormalised."""
    Q = torch.softmax(torch.randn(target.L.shape, generator=gen) * 1.5, dim=1)
    state = {}

    def draft(plen, pcode, j):
        q = Q[target.row(plen, pcode)]
        if j == 1:
            q2 = q.clone()
            q2.scatter_(1, state["first"].unsqueeze(1), 0.0)
            q2 = q2 / q2.sum(1, keepdim=True)
            t = torch.multinomial(q2, 1, generator=gen).squeeze(1)
            return t, (q2 if honest else q)
        t = torch.multinomial(q, 1, generator=gen).squeeze(1)
        if j == 0:
            state["first"] = t
        return t, q

    return draft


def test_siblings_without_replacement_with_conditional_rows():
    gen = torch.Generator().manual_seed(13)
    tg = ToyTarget(4, 2, gen, scale=1.5)
    seqs = _run(tg, [-1, -1, 0, 1], _without_replacement_drafter(tg, gen, honest=True))
    assert fit(seqs, 4, tg.expected()) > P_MIN


def test_siblings_without_replacement_with_plain_rows_is_biased():
    gen = torch.Generator().manual_seed(13)
    tg = ToyTarget(4, 2, gen, scale=1.5)
    seqs = _run(tg, [-1, -1, 0, 1], _without_replacement_drafter(tg, gen, honest=False))
    assert fit(seqs, 4, tg.expected()) < P_MIN


@pytest.mark.parametrize("drafter", ["draft_probs", "masked_tokens"])
def test_neg_inf_masked_target(drafter):
    """-inf logits (HF processors' masks) in every row: token 0 always, token 3 in every other row.
    With a draft model, and with deterministic drafts that always propose a masked token (argmin), the
    emitted sequences follow the masked target and never contain a masked token."""
    gen = torch.Generator().manual_seed(13)
    tg = ToyTarget(6, 2, gen)
    tg.L[:, 0] = float("-inf")
    tg.L[::2, 3] = float("-inf")
    if drafter == "draft_probs":
        draft = model_drafter(tg, gen)
    else:
        def draft(plen, pcode, j):
            return tg.L[tg.row(plen, pcode)].argmin(1), None
    seqs = _run(tg, TREE_DUP, draft, temperature=0.8, top_k=4)
    expected = tg.expected(0.8, 4)
    assert fit(seqs, 6, expected) > P_MIN
