"""verispec: lossless speculative decoding machinery for any PyTorch causal LM.

Public names are imported lazily so `import verispec` stays cheap (no torch, transformers or triton
import until an op is used). See docs/architecture.md for the data path and where each op lives.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # shared types
    "DraftTree": "verispec.tree",
    "pack_trees": "verispec.tree",
    # ops
    "tree_buffers": "verispec.ops.tree_buffers",
    "TreeBuffers": "verispec.ops.tree_buffers",
    "verify": "verispec.ops.verify",
    "VerifyResult": "verispec.ops.verify",
    "tree_attention": "verispec.ops.tree_attention",
    "commit_kv": "verispec.ops.commit_kv",
    # retrieval
    "Datastore": "verispec.datastore",
    "PromptIndex": "verispec.datastore",
    "DatastoreChangedError": "verispec.datastore",
    # generation
    "generate": "verispec.generation",
    "GenerateOutput": "verispec.generation",
    "GenerateStats": "verispec.generation",
    "Drafter": "verispec.drafters",
    "NoDrafter": "verispec.drafters",
    "RetrievalDrafter": "verispec.drafters",
    "PromptLookupDrafter": "verispec.drafters",
    "DraftModelDrafter": "verispec.drafters.draft_model",
    "HeadsDrafter": "verispec.drafters.heads",
    "MergedDrafter": "verispec.drafters.merge",
    "EarlyExitDrafter": "verispec.drafters.early_exit",
    "SpeculativeEditsDrafter": "verispec.drafters.edits",
    "PredictionFirst": "verispec.drafters.edits",
    "CalibratedDrafter": "verispec.drafters.calibrated",
    # backends
    "backends": "verispec._backends",
    "backend_report": "verispec._backends",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'verispec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
