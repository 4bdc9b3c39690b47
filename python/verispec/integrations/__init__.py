"""verispec inside other serving engines.

`verispec.integrations.vllm`: draft proposers for vLLM (``speculative_config`` method ``"custom_class"``).
Nothing here is imported by ``import verispec``; each module imports its engine only when used.
"""
