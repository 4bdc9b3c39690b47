"""Hugging Face transformers integration: tree attention registered with transformers'
AttentionInterface, a ragged per-request KV cache, the 4D-mask fallback, and model loading (incl. GGUF).

Importing this package imports transformers; `import verispec` alone does not.
"""

from verispec.hf.attention import ATTN_NAME, TreeMeta, tree_mask_4d, use_attention, verispec_attention_forward
from verispec.hf.cache import RaggedCache
from verispec.hf.model import TreeModel, check_model, model_vocab_size

__all__ = [
    "ATTN_NAME",
    "TreeMeta",
    "RaggedCache",
    "TreeModel",
    "check_model",
    "model_vocab_size",
    "tree_mask_4d",
    "use_attention",
    "verispec_attention_forward",
]
