"""Run vLLM once in a fresh process: ``python tools/vllm_run.py SPEC.json`` prints one JSON line of results.

vLLM starts worker processes and keeps global state, so the tests and `bench/bench_vllm.py` run each
configuration in its own interpreter through this script. SPEC (JSON):

* ``model``: HF directory; ``speculative_config`` (or null); ``additional_config``; optional
  ``max_model_len``, ``max_num_seqs``, ``kv_cache_bytes``;
* ``sets``: ``[{"name", "prompts" (lists of token ids), "max_tokens" (one per prompt)}]``, generated one
  set after the other (each set's requests together, as one batch), after a short warm-up.

Prints ``{"sets": {name: {"outputs", "finish_reasons", "seconds", "spec"}}}``, where ``spec`` holds the
change of vLLM's speculative-decoding counters over the set (``drafts``, ``draft_tokens``,
``accepted_tokens``), or ``{"error": ...}`` with the start-up exception and its causes.
"""

from __future__ import annotations

import json
import sys
import time


def spec_counters(llm) -> dict:
    out = {}
    try:
        for m in llm.get_metrics():
            if m.name.startswith("vllm:spec_decode_num_") and isinstance(getattr(m, "value", None), (int, float)):
                out[m.name[len("vllm:spec_decode_num_"):]] = m.value
    except Exception:  # counters are a nicety of the benchmark, never a reason to fail a run
        pass
    return out


def main(path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    with open(path) as fh:
        spec = json.load(fh)
    try:
        llm = LLM(spec["model"], speculative_config=spec.get("speculative_config"), dtype="float32",
                  max_model_len=spec.get("max_model_len", 2048), seed=0, enforce_eager=True,
                  kv_cache_memory_bytes=spec.get("kv_cache_bytes", 1 << 30), disable_log_stats=False,
                  max_num_seqs=spec.get("max_num_seqs", 16), additional_config=spec.get("additional_config") or {})
    except Exception as exc:
        chain, e = [], exc
        while e is not None:
            chain.append(f"{type(e).__name__}: {e}")
            e = e.__cause__ or e.__context__
        print(json.dumps({"error": " <- ".join(chain)}), flush=True)
        return
    first = spec["sets"][0]["prompts"][0]
    llm.generate([TokensPrompt(prompt_token_ids=first)], SamplingParams(temperature=0.0, max_tokens=8),
                 use_tqdm=False)  # warm-up
    results = {}
    for s in spec["sets"]:
        params = [SamplingParams(temperature=0.0, max_tokens=n) for n in s["max_tokens"]]
        prompts = [TokensPrompt(prompt_token_ids=p) for p in s["prompts"]]
        before = spec_counters(llm)
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        secs = time.perf_counter() - t0
        after = spec_counters(llm)
        results[s["name"]] = {
            "outputs": [list(o.outputs[0].token_ids) for o in outs],
            "finish_reasons": [o.outputs[0].finish_reason for o in outs],
            "seconds": secs,
            "spec": {k: after[k] - before.get(k, 0) for k in after},
        }
    print(json.dumps({"sets": results}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
