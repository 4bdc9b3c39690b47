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
from typing import Callable

import torch

__all__ = ["measure_row_cost", "pick_budget", "expected_tokens", "cpu_row_cost", "gpu_row_cost"]

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
