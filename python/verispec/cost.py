"""How much a verification forward over ``T`` rows costs relative to one row, measured on this machine.

On a CPU the forward of a small model is a chain of matrix products with a handful of rows, and what
those cost depends on the BLAS and the processor: on the Intel machine this project first ran on, 2-3
rows cost about one and 4 rows 1.45x; on an AMD EPYC with the same torch/MKL build, 2 rows cost 2x and
3 rows 3x while 4 rows cost 2.4x and 8 rows 2.6x (small layers) or 1.6x (the LM head). A fixed draft
budget is right on one of them and wrong on the other, so the CLI and the demo measure: every distinct
weight shape of the model's linear layers is timed at each row count with the model's own weights,
weighted by how often the shape occurs. That takes well under a second and leaves out attention,
which at these sizes is a small share of a CPU forward.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence
from typing import Any, Callable

import torch

__all__ = ["measure_row_cost", "pick_budget", "expected_tokens", "cpu_row_cost", "gpu_row_cost",
           "measure_forward_cost", "forward_cost", "AdaptiveSizer"]

ROWS = (1, 2, 3, 4, 5, 6, 8, 12, 16)


def measure_row_cost(model: torch.nn.Module, rows: tuple[int, ...] = ROWS, repeats: int = 3) -> Callable[[int], float]:
    """``cost(T)``: a forward over ``T`` rows relative to ``T = 1`` (interpolated between the measured
    row counts, extrapolated linearly past the last one)."""
    shapes: dict[tuple, list] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            key = (tuple(m.weight.shape), m.weight.dtype, m.weight.device)
            entry = shapes.setdefault(key, [m, 0])
            entry[1] += 1
    if not shapes:
        raise ValueError(f"{type(model).__name__} has no linear layers to time")
    total = {t: 0.0 for t in rows}
    with torch.inference_mode():
        for (shape, dtype, device), (layer, count) in shapes.items():
            for t in rows:
                x = torch.randn(t, shape[1], dtype=dtype, device=device)
                layer(x)  # warm-up: first calls allocate and pick kernels
                best = math.inf
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    layer(x)
                    best = min(best, time.perf_counter() - t0)
                total[t] += count * best
    base = total[rows[0]]
    points = [(t, total[t] / base) for t in rows]
    return _Interpolated(points)


class _Interpolated:
    def __init__(self, points: list[tuple[int, float]]):
        self.points = points
        self.__name__ = "measured_row_cost"

    def __call__(self, t: int) -> float:
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1]
        for (a, ca), (b, cb) in zip(pts, pts[1:]):
            if t <= b:
                return ca + (cb - ca) * (t - a) / (b - a)
        (a, ca), (b, cb) = pts[-2], pts[-1]
        return cb + (cb - ca) * (t - b) / (b - a)

    def __repr__(self) -> str:
        return "row cost " + ", ".join(f"T={t}: {c:.2f}" for t, c in self.points)


def expected_tokens(budget: int) -> float:
    """Tokens per step with ``budget`` draft nodes, fitted to the replay of greedy HumanEval outputs
    through the retrieval drafter (docs/generate.md: 1.88 at 2 nodes, 2.36 at 6, 2.68 at 12): a power
    law through the first and last point, within 0.05 token of the middle one."""
    return 1.0 + 0.687 * budget ** 0.361


def pick_budget(row_cost: Callable[[int], float], max_budget: int = 15) -> int:
    """The draft budget with the most expected tokens per unit of forward cost."""
    return max(range(1, max_budget + 1), key=lambda b: (expected_tokens(b) / row_cost(b + 1), -b))


def cpu_row_cost(rows: int) -> float:
    """Cost of a CPU forward over ``rows`` rows relative to one row, measured for SmolLM2-135M on a
    2-core x86 CPU (fp32, MKL): up to 3 rows cost about one; 4..16 rows 1.45..2.0 (BLAS changes kernel at 4)."""
    if rows <= 3:
        return 1.0 + 0.025 * (rows - 1)
    return 1.45 + 0.045 * (rows - 4)


def gpu_row_cost(rows: int) -> float:
    """A GPU forward is memory-bound at these sizes: extra rows are nearly free."""
    return 1.0 + 0.004 * (rows - 1)


# -- the whole forward, and sizing every step from it ----------------------------------------------------------
FORWARD_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_FORWARD_COSTS: weakref.WeakKeyDictionary[torch.nn.Module, _Interpolated] = weakref.WeakKeyDictionary()


def measure_forward_cost(model: torch.nn.Module, rows: tuple[int, ...] = FORWARD_ROWS, prefix: int = 256,
                         repeats: int = 6) -> Callable[[int], float]:
    """``cost(T)``: the whole verification forward (every layer, tree attention over a ``prefix``-token
    cache, the LM head) over ``T`` rows relative to ``T = 1``, timed through the path `generate` runs.

    After an untimed round, the row counts are timed round-robin ``repeats`` times and the fastest of each
    kept, so a busy machine slows all of them alike; the curve is then the lower non-decreasing envelope
    (see below), which keeps the sizing objective from flipping on one unlucky measurement.
    """
    from verispec.generation import _pack
    from verispec.hf.model import TreeModel
    from verispec.tree import DraftTree

    target = TreeModel(model)
    dev, V = target.device, target.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, V, (prefix,), generator=gen).tolist()
    cache = target.new_cache(1, prefix + max(rows) + 8)
    target.prefill(cache, [prompt])
    best = {t: math.inf for t in rows}
    batches = {t: _pack([DraftTree.chain(torch.randint(0, V, (t - 1,), generator=gen))], [prompt[-1]], dev, V)
               for t in rows}
    warm = 1  # a round not timed: the first forwards after a prefill are up to 100x slower (allocation, planning)
    with torch.inference_mode():
        for rep in range(warm + repeats):
            for t in rows:
                b = batches[t]
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                target.forward_tree(cache, b.ids, b.tree_lens, b.buffers).sum().item()
                if rep >= warm:
                    best[t] = min(best[t], time.perf_counter() - t0)
    # A larger forward never costs less, so a point above a later one was slowed by something else (on a
    # shared machine the process is descheduled for tens of milliseconds at a time): each point is lowered
    # to the smallest at or after it. Noise only ever adds time, so this lower envelope is the estimate.
    points, low = [], math.inf
    for t in reversed(rows):
        low = min(low, best[t])
        points.append((t, low / best[rows[0]]))
    points = [(t, max(1.0, c)) for t, c in reversed(points)]
    cost = _Interpolated(points)
    cost.__name__ = "measured_forward_cost"
    return cost


def forward_cost(model: torch.nn.Module) -> Callable[[int], float]:
    """`measure_forward_cost` of ``model``, measured once per model object and process."""
    cost = _FORWARD_COSTS.get(model)
    if cost is None:
        cost = _FORWARD_COSTS[model] = measure_forward_cost(model)
    return cost


class AdaptiveSizer:
    """How many of each request's draft nodes a step verifies: the size with the most expected tokens
    per unit of forward cost, from the drafter's scores corrected per request by what it delivered.

    Scores are read as acceptance probabilities of the paths to the nodes (a tree in best-first order),
    so verifying the first ``k`` nodes is expected to emit ``1 + sum(scores[:k])`` tokens for the cost
    ``cost(k + 1)``. Per request, a calibration ``c`` scales every node's conditional acceptance (its
    score over its parent's): ``c`` = decayed (accepted trials + 0.25) / (predicted + 0.25), where each
    step's trials are the nodes of the accepted path (hits) and, below its last node, the best kept
    child (a miss). Per token, not per chain: one long chain rejected at its fourth node is one miss,
    not sixty. A drafter whose drafts keep failing sees ``c`` fall until no draft pays and the request
    decodes plainly; while it does not draft, the counts fade so drafts get retried now and then.
    Hysteresis: the size of the request's previous step is kept while its objective is within
    ``hysteresis`` of the best one (a near-flat objective must not flip on noise). The cost curve is
    corrected online: step times are recorded per row-count bucket (powers of two), and once a bucket
    and the one-row bucket both have ``min_obs`` steps, their measured ratio corrects the curve there.

    Parameters
    ----------
    cost : ``cost(T)``, a forward over ``T`` rows relative to one (`forward_cost`, `measure_forward_cost`).
    max_nodes : most draft nodes per request and step.
    calibrate : correct the scores per request as above. A drafter whose scores are already acceptance
        estimates learned from the model's output (``calibrated = True``, e.g. `SpeculativeEditsDrafter`)
        is sized from its scores as they are: correcting them again would count every miss twice.
    """

    def __init__(self, cost: Callable[[int], float], max_nodes: int = 64, hysteresis: float = 0.02,
                 decay: float = 0.9, relax: float = 0.05, min_obs: int = 4, calibrate: bool = True):
        if max_nodes < 0:
            raise ValueError(f"AdaptiveSizer: max_nodes must be >= 0, got {max_nodes}")
        self.cost, self.max_nodes = cost, int(max_nodes)
        self.hysteresis, self.decay, self.relax, self.min_obs = hysteresis, decay, relax, min_obs
        self.calibrate = bool(calibrate)
        self._cal: dict[int, list[float]] = {}  # request -> [hits, predicted], decayed
        self._last: dict[int, int] = {}
        self._kept: dict[int, tuple[list[int], list[int], list[float]]] = {}  # request -> kept tree, conditionals
        self._obs: dict[int, list[float]] = {}  # bucket (rows) -> [steps, seconds]

    def calibration(self, request: int) -> float:
        if not self.calibrate:
            return 1.0
        hits, pred = self._cal.get(request, (0.0, 0.0))
        return (hits + 0.25) / (pred + 0.25)

    def _bucket(self, rows: int) -> int:
        return 1 << (max(rows, 1) - 1).bit_length()  # 1, 2, 4, 8, ...

    def step_cost(self, rows: int) -> float:
        """The cost curve at ``rows``, corrected by observed step times where there are enough."""
        c = self.cost(rows)
        b, one = self._obs.get(self._bucket(rows)), self._obs.get(1)
        if rows > 1 and b and one and b[0] >= self.min_obs and one[0] >= self.min_obs:
            seen = (b[1] / b[0]) / (one[1] / one[0])
            c = c * min(2.0, max(0.5, seen / self.cost(self._bucket(rows))))
        return max(c, 1.0)

    def size(self, requests: Sequence[int], trees: Sequence[Any]) -> list[Any]:
        out = []
        for r, tree in zip(requests, trees):
            n = min(len(tree), self.max_nodes)
            self._kept.pop(r, None)
            if n == 0:
                out.append(tree.head(0))
                continue
            c = self.calibration(r)
            toks, pars, scores = tree.lists()
            cond = [min(1.0, s / (scores[p] if p >= 0 else 1.0)) if s > 0 else 0.0 for s, p in zip(scores, pars)]
            est: list[float] = []
            for i in range(n):
                est.append((est[pars[i]] if pars[i] >= 0 else 1.0) * min(1.0, c * cond[i]))
            gain, values = 1.0, [1.0 / self.step_cost(1)]
            for k in range(1, n + 1):
                gain += est[k - 1]
                values.append(gain / self.step_cost(k + 1))
            k = max(range(n + 1), key=lambda i: (values[i], -i))
            last = min(self._last.get(r, k), n)
            if values[last] >= values[k] * (1.0 - self.hysteresis):
                k = last
            self._last[r] = k
            if k:
                self._kept[r] = (toks[:k], pars[:k], cond[:k])
            out.append(tree.head(k))
        return out

    def observe(self, requests: Sequence[int], accepted_tokens: Sequence[Sequence[int]], rows: int,
                seconds: float) -> None:
        """What the trees of the last `size` call delivered (per request, the accepted draft tokens) and
        how long the step took over ``rows`` rows per request."""
        for r, path in zip(requests, accepted_tokens):
            cal = self._cal.setdefault(r, [0.0, 0.0])
            kept = self._kept.pop(r, None)
            if kept is None:  # not drafting: fade the evidence, so drafts get retried
                cal[0] *= 1.0 - self.relax
                cal[1] *= 1.0 - self.relax
                continue
            toks, pars, cond = kept
            hits = pred = 0.0
            node = -1
            for t in path:
                nxt = next((i for i in range(len(toks)) if pars[i] == node and toks[i] == t), None)
                if nxt is None:
                    break
                node, hits, pred = nxt, hits + 1.0, pred + cond[nxt]
            below = [cond[i] for i in range(len(toks)) if pars[i] == node]
            if below:  # the step stopped although a child was drafted: one miss
                pred += max(below)
            cal[0] = cal[0] * self.decay + hits
            cal[1] = cal[1] * self.decay + pred
        b = self._obs.setdefault(self._bucket(rows), [0.0, 0.0])
        b[0] += 1
        b[1] += seconds
