"""The benchmark corpus now lives in the package (``verispec.bench._corpus``, used by ``verispec bench``
too); this name stays for scripts that import it from here.

    python bench/_corpus.py        # tokenize (once, cached) and print the corpus facts
"""

from __future__ import annotations

import json

from verispec.bench._corpus import CACHE, Corpus, is_heldout, load_corpus, smollm2_tokenizer, stdlib_files

__all__ = ["CACHE", "Corpus", "is_heldout", "load_corpus", "smollm2_tokenizer", "stdlib_files"]

if __name__ == "__main__":
    print(json.dumps(load_corpus().meta, indent=2))
