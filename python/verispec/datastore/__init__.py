"""Suffix-array datastore (`Datastore`) and per-request index (`PromptIndex`) for retrieval drafts.

`store` wraps the C++ core (csrc/datastore/), `tokenize` turns text corpora into token documents for
`verispec datastore build`, and `reference` is the plain-Python oracle the tests compare against.
"""

from verispec.datastore.store import MAX_TOKEN_ID, Datastore, DatastoreChangedError, DraftArrays, PromptIndex

__all__ = ["Datastore", "PromptIndex", "DraftArrays", "DatastoreChangedError", "MAX_TOKEN_ID"]
