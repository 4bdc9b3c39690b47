"""Turn a GGUF model into a plain Hugging Face directory (config.json, safetensors, tokenizer files).

Serving engines such as vLLM read HF directories; the bundled SmolLM2 ships as GGUF. transformers can
load a GGUF (dequantizing it) but refuses to `save_pretrained` that model, so the model is built again
from its config and given the dequantized weights, which it can save.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["export_hf_dir", "cache_dir"]


def cache_dir() -> Path:
    """``$VERISPEC_CACHE`` or ``~/.cache/verispec``."""
    return Path(os.environ.get("VERISPEC_CACHE") or Path.home() / ".cache" / "verispec")


def export_hf_dir(name: str = "smollm2", out: Optional[str] = None) -> str:
    """Path of an HF directory holding model ``name`` (see `verispec.hf.loading.resolve_model`).

    An HF directory is returned as it is. A GGUF model is converted once to ``out`` (default
    ``cache_dir()/<gguf file stem>-hf``) and reused afterwards; the directory appears atomically
    (written beside it, then renamed), so an interrupted conversion leaves nothing half-written.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from verispec.hf.loading import resolve_model

    where, gguf = resolve_model(name)
    if gguf is None:
        return where
    target = Path(out) if out else cache_dir() / (Path(gguf).stem.lower() + "-hf")
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # GGUF conversion logs every tensor
    try:
        config = AutoConfig.from_pretrained(where, gguf_file=gguf)
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf, dtype=torch.float32)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        # Tied embeddings show up as a missing lm_head; anything else means the conversion lost weights.
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise ValueError(f"{gguf}: converted weights do not match the config (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(where, gguf_file=gguf).save_pretrained(tmp)
    finally:
        hf_logging.set_verbosity(verbosity)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
