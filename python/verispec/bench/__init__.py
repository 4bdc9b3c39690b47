"""The benchmark suite behind ``verispec bench``: one module per op with its input builders and the
implementations it times (ours and every installed peer), plus the report (markdown tables, JSON,
plots, regression check against a baseline).

The scripts under ``bench/`` in a source checkout import their builders from here, so a wheel and a
checkout time the same inputs. Nothing here is imported by ``import verispec``.
"""

from __future__ import annotations

# op -> module; each module has ``run(ctx) -> dict`` (see _common.OpResult for the row format).
OPS = {
    "datastore": "verispec.bench.datastore",
    "verify": "verispec.bench.verify",
    "tree_attention": "verispec.bench.tree_attention",
    "commit_kv": "verispec.bench.commit_kv",
    "generate": "verispec.bench.generate",
}
