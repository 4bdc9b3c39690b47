"""GPU backends whose tests have passed on real hardware.

`backend="auto"` only picks a Triton or CUDA implementation for an op when its (op, backend) pair
is listed here for the device's architecture (``"sm_90"`` for an H100). Each entry records where the
evidence lives. Add an entry only after the op's GPU tests passed on that architecture, and commit the
run's log under ``bench/results/``.
"""

from __future__ import annotations

# {(op, backend): {"sm_90": "bench/results/<file> (commit, date)"}}
VERIFIED: dict[tuple[str, str], dict[str, str]] = {}
