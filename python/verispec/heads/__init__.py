"""Multi-token heads (Medusa / multi-token prediction) for any Hugging Face causal LM: build
(`init_heads`), train (`verispec.heads.train`, ``verispec heads train``), save and `load`; draft with
`verispec.drafters.heads.HeadsDrafter`."""

from verispec.heads.model import Heads, HeadsConfig, init_heads, load

__all__ = ["Heads", "HeadsConfig", "init_heads", "load"]
