"""Drafters: where draft trees come from (see `verispec.drafters.base` for the protocol).

One module per idea: `prompt_lookup` (the request's own text), `retrieval` (a suffix-array datastore),
`draft_model` (a small model, sampled drafts with their probabilities), `edits` (the expected
output, speculative edits); `calibrated` turns any drafter's scores into learned acceptance estimates;
`trees` merges and sizes trees.
"""

from verispec.drafters.base import EMPTY, Accepted, Context, Drafter, NoDrafter
from verispec.drafters.calibrated import CalibratedDrafter
from verispec.drafters.draft_model import DraftModelDrafter
from verispec.drafters.edits import PredictionFirst, SpeculativeEditsDrafter
from verispec.drafters.heads import HeadsDrafter
from verispec.drafters.prompt_lookup import PromptLookupDrafter
from verispec.drafters.retrieval import RetrievalDrafter
from verispec.drafters.trees import merge_trees, trim_to_cost

__all__ = [
    "EMPTY",
    "Accepted",
    "Context",
    "Drafter",
    "NoDrafter",
    "CalibratedDrafter",
    "DraftModelDrafter",
    "HeadsDrafter",
    "PredictionFirst",
    "SpeculativeEditsDrafter",
    "PromptLookupDrafter",
    "RetrievalDrafter",
    "merge_trees",
    "trim_to_cost",
]
