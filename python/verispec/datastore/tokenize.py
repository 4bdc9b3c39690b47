"""Text side of the datastore CLI: load a tokenizer (tokenizer.json, a Hugging Face directory, or a
GGUF file) and turn files, directories and JSONL into token-id documents.

Kept free of torch; `transformers` is imported only for HF directories without tokenizer.json and
for GGUF files.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional


class TextEncoder:
    """A fast (Rust) tokenizer behind one small interface.

    Attributes: ``name`` (where it came from), ``vocab_size`` (ids are < vocab_size).
    """

    def __init__(self, backend: Any, name: str):
        self.backend = backend  # tokenizers.Tokenizer
        self.name = name
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (the Rust side uses every core)."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self.backend.decode([int(token_id)], skip_special_tokens=False)


def _from_transformers(directory: str, gguf_file: Optional[str], name: str) -> TextEncoder:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise RuntimeError(f"loading {name} needs transformers ({exc})") from None
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(directory, **kwargs)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{name}: only fast (Rust-backed) tokenizers are supported, got {type(tok).__name__}")
    return TextEncoder(backend, name)


def load_tokenizer(spec: str) -> TextEncoder:
    """`spec`: a tokenizer.json file, a Hugging Face model directory, or a .gguf file."""
    from tokenizers import Tokenizer

    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"tokenizer {spec} does not exist (expected tokenizer.json, an HF directory or a .gguf)")
    if p.is_file() and p.suffix == ".gguf":
        return _from_transformers(str(p.parent), p.name, str(p))
    if p.is_file():
        try:
            return TextEncoder(Tokenizer.from_file(str(p)), str(p))
        except Exception as exc:
            raise ValueError(f"{spec} is not a tokenizer.json file: {exc}") from None
    if (p / "tokenizer.json").is_file():
        return TextEncoder(Tokenizer.from_file(str(p / "tokenizer.json")), str(p / "tokenizer.json"))
    ggufs = sorted(p.glob("*.gguf"))
    if ggufs:
        return _from_transformers(str(p), ggufs[0].name, str(ggufs[0]))
    return _from_transformers(str(p), None, str(p))


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def iter_texts(inputs: Iterable[str], extensions: Optional[set[str]] = None, field: str = "text",
               stats: Optional[dict] = None) -> Iterator[str]:
    """Documents as text: a plain file is one document, each JSONL line is one (its `field`, or the
    line itself when it is a JSON string); directories are walked in sorted order, keeping files
    whose suffix is in `extensions` (None: every file). Files that are not UTF-8 are skipped and
    counted in ``stats["skipped"]``."""
    stats = stats if stats is not None else {}
    stats.setdefault("files", 0)
    stats.setdefault("skipped", 0)

    def one_file(path: Path) -> Iterator[str]:
        try:
            if _is_jsonl(path):
                with _open_text(path) as f:
                    for lineno, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None
                        if isinstance(obj, str):
                            yield obj
                        elif isinstance(obj, dict) and isinstance(obj.get(field), str):
                            yield obj[field]
                        else:
                            raise ValueError(f"{path}:{lineno}: expected a JSON string or an object with a "
                                             f"string field {field!r}")
            else:
                with _open_text(path) as f:
                    text = f.read()
                yield text
            stats["files"] += 1
        except UnicodeDecodeError:
            stats["skipped"] += 1

    for spec in inputs:
        p = Path(spec)
        if not p.exists():
            raise FileNotFoundError(f"input {spec} does not exist")
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    fp = Path(root) / name
                    if extensions is None or fp.suffix in extensions or _is_jsonl(fp):
                        yield from one_file(fp)
        else:
            yield from one_file(p)


def tokenize_documents(encoder: TextEncoder, texts: Iterable[str], batch: int = 256) -> Iterator[list[int]]:
    """Token ids of each text, encoded in batches (parallel in the Rust tokenizer)."""
    buf: list[str] = []
    for t in texts:
        buf.append(t)
        if len(buf) >= batch:
            yield from encoder.encode_batch(buf)
            buf = []
    if buf:
        yield from encoder.encode_batch(buf)
