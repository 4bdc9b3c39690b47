"""Training data for heads: text files, directories, JSONL, the local standard library, and
self-distilled chat answers (the base model's own greedy answers, which keep the heads aligned with
what the model will actually say).

Data specs (``--data``), any mix:

* a ``.py`` / ``.txt`` / ``.md`` file, or a directory (walked for those);
* a ``.jsonl`` file: one object per line with ``text``, or ``prompt`` (+ optional ``response``), or
  ``messages`` (chat turns);
* ``stdlib``: the Python standard library's sources (offline everywhere);
* ``chat``: built-in chat prompts (`chat_prompts`), answered by the model itself (self-distillation).

Prompts without a response are answered by the base model when self-distilling; answers are cached
in a JSONL file keyed by the prompt, so a second run (or a resumed one) does not generate again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["Corpus", "chat_prompts", "read_data", "self_distill"]

_TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst"}

# Built-in chat prompts: task templates crossed with topics. Written for this project as generic
# assistant requests (writing, explaining, advice, reasoning, coding); none is an MT-Bench question.
_TEMPLATES = [
    "Explain {t} to a curious high-school student.",
    "Write a short blog post about {t}.",
    "What are the three most common misconceptions about {t}?",
    "Give me a step-by-step plan to learn about {t} in one month.",
    "Summarize the history of {t} in a few paragraphs.",
    "Write a friendly email inviting a colleague to a talk on {t}.",
    "List the pros and cons of {t}.",
    "Describe {t} using an analogy from cooking.",
    "Write a short poem about {t}.",
    "What questions would you ask an expert on {t}?",
    "Compare {t} with a related idea and explain the differences.",
    "Write a Python function related to {t} and explain how it works.",
    "Draft a two-minute speech about why {t} matters.",
    "Create a quiz with five questions about {t}, with answers.",
    "How would you explain {t} to a five-year-old?",
    "Write a dialogue between two friends arguing about {t}.",
]
_TOPICS = [
    "photosynthesis", "compound interest", "the water cycle", "public libraries", "volcanoes", "recycling",
    "sleep hygiene", "the printing press", "electric cars", "honeybees", "time management", "jazz music",
    "black holes", "remote work", "the Roman roads", "vaccines", "chess openings", "urban gardening",
    "machine translation", "the stock market", "coral reefs", "learning a second language", "bicycles",
    "supply and demand", "the immune system", "recursion in programming", "hash tables", "plate tectonics",
    "meditation", "renewable energy", "the Silk Road", "public speaking", "sorting algorithms", "fermentation",
    "climate adaptation", "the human eye", "version control", "board games", "budget travel", "clean code",
]


def chat_prompts(n: Optional[int] = None, seed: int = 0) -> list[str]:
    """Chat prompts (templates x topics) in a fixed shuffled order; the first ``n`` of them."""
    allp = [tpl.format(t=t) for tpl, t in itertools.product(_TEMPLATES, _TOPICS)]
    random.Random(seed).shuffle(allp)
    return allp if n is None else allp[:n]


@dataclass
class Corpus:
    """Raw material: plain texts (trained on as they are) and chat prompts (answered by the model)."""

    texts: list[str] = field(default_factory=list)
    chats: list[tuple[str, Optional[str]]] = field(default_factory=list)  # (prompt, response or None)
    sources: list[str] = field(default_factory=list)


def _iter_files(root: Path) -> list[Path]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__")
        out.extend(Path(d) / f for f in sorted(files) if Path(f).suffix in _TEXT_SUFFIXES | {".jsonl"})
    return out


def _read_jsonl(path: Path, corpus: Corpus) -> None:
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{i}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{i}: expected an object with text, prompt or messages")
            if isinstance(obj.get("text"), str):
                corpus.texts.append(obj["text"])
            elif isinstance(obj.get("prompt"), str):
                resp = obj.get("response")
                corpus.chats.append((obj["prompt"], resp if isinstance(resp, str) else None))
            elif isinstance(obj.get("messages"), list):
                msgs = obj["messages"]
                user = next((m.get("content") for m in msgs if m.get("role") == "user"), None)
                resp = next((m.get("content") for m in msgs if m.get("role") == "assistant"), None)
                if not isinstance(user, str):
                    raise ValueError(f"{path}:{i}: messages hold no user turn")
                corpus.chats.append((user, resp if isinstance(resp, str) else None))
            else:
                raise ValueError(f"{path}:{i}: expected an object with text, prompt or messages")


def read_data(specs: Sequence[str], max_files: Optional[int] = None, chat_count: int = 256) -> Corpus:
    """A `Corpus` from ``--data`` specs (see the module docstring). ``max_files`` caps the files taken
    from each directory (evenly spread over it, so a cap still covers the whole tree)."""
    corpus = Corpus()
    for spec in specs:
        if spec == "chat":
            corpus.chats.extend((p, None) for p in chat_prompts(chat_count))
            corpus.sources.append(f"chat ({chat_count} built-in prompts)")
            continue
        if spec == "stdlib":
            from verispec.corpus import stdlib_sources

            files = stdlib_sources()
        else:
            p = Path(spec).expanduser()
            if not p.exists():
                raise FileNotFoundError(f"--data {spec}: no such file or directory")
            files = _iter_files(p) if p.is_dir() else [p]
        if max_files is not None and len(files) > max_files:
            step = len(files) / max_files
            files = [files[int(i * step)] for i in range(max_files)]
        for f in files:
            if f.suffix == ".jsonl":
                _read_jsonl(f, corpus)
            else:
                try:
                    corpus.texts.append(f.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, OSError):
                    continue
        corpus.sources.append(f"{spec} ({len(files)} files)")
    if not corpus.texts and not corpus.chats:
        raise ValueError(f"--data {' '.join(specs)}: no training text found")
    return corpus


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"]


def self_distill(model: Any, tokenizer: Any, prompts: Sequence[str], cache: Path, max_new_tokens: int = 256,
                 batch_size: int = 16, progress: bool = True) -> dict[str, list[int]]:
    """Token ids (chat prompt + the model's greedy answer) for every prompt, generated with
    `verispec.generate` in batches and cached in ``cache`` (JSONL keyed by a hash of the prompt and
    ``max_new_tokens``), so repeated or resumed runs skip what is done."""
    import verispec

    cache.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[int]] = {}
    if cache.exists():
        with cache.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    done[obj["key"]] = obj["ids"]

    def key(p: str) -> str:
        return hashlib.sha256(f"{max_new_tokens}\0{p}".encode()).hexdigest()[:16]

    todo = [p for p in dict.fromkeys(prompts) if key(p) not in done]
    t0 = time.perf_counter()
    with cache.open("a", encoding="utf-8") as fh:
        for i in range(0, len(todo), batch_size):
            part = todo[i:i + batch_size]
            ids = [_chat_ids(tokenizer, p) for p in part]
            out = verispec.generate(model, ids, max_new_tokens=max_new_tokens)
            for p, seq in zip(part, out.sequences):
                done[key(p)] = seq.tolist()
                fh.write(json.dumps({"key": key(p), "ids": seq.tolist()}) + "\n")
            fh.flush()
            if progress:
                el = time.perf_counter() - t0
                print(f"self-distill: {min(i + batch_size, len(todo))}/{len(todo)} prompts answered, "
                      f"{el:.0f}s", file=sys.stderr, flush=True)
    return {p: done[key(p)] for p in prompts}
