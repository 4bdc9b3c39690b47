"""Shared helpers (no tests here): tiny random-weight causal LMs and adversarial drafters for the generate tests."""

from __future__ import annotations

import random

import torch

from verispec import DraftTree

VOCAB = 97  # odd, so no power-of-two shortcut hides a bug


def tiny_model(arch: str, seed: int = 0, vocab: int = VOCAB, dtype=torch.float32, head_dim: int | None = None):
    """A 2-layer random-weight model of the given architecture (fp32, CPU, eval mode). ``head_dim``
    (Llama only) overrides hidden / heads = 12, e.g. 64 for the CUDA kernels' head dims."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, num_hidden_layers=2, max_position_embeddings=512)
    if arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                             **({"head_dim": head_dim} if head_dim else {}), **common)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=48, intermediate_size=96, num_attention_heads=6, num_key_value_heads=2,
                             **common)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, bos_token_id=0, eos_token_id=0, n_embd=48, n_layer=2, n_head=4, n_positions=512)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "gemma2":
        # A window of 5 positions and soft-capping both matter at these lengths.
        cfg = tf.Gemma2Config(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=16, sliding_window=5, attn_logit_softcapping=2.0,
                              final_logit_softcapping=5.0, query_pre_attn_scalar=16, tie_word_embeddings=False,
                              **common)
        model = tf.Gemma2ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    # Random init is tiny by default; larger weights give peaked, well-separated logits.
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    # No EOS unless a test asks for one: the oracle and verispec must stop for the same reason.
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval()


def reference_greedy(model, prompt: list[int], max_new_tokens: int, eos: list[int] | None) -> list[int]:
    """``model.generate(do_sample=False)`` on one request: the oracle."""
    dev = next(model.parameters()).device
    out = model.generate(
        torch.tensor([prompt], device=dev), attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=dev),
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None, pad_token_id=0,
        min_new_tokens=0,
    )
    return out[0].tolist()


class RandomTreeDrafter:
    """Random trees of random tokens: almost everything is rejected, KV compaction is exercised."""

    def __init__(self, vocab: int, budget: int = 9, seed: int = 0):
        self.vocab, self.budget, self.rng = vocab, budget, random.Random(seed)

    def propose(self, contexts):
        trees = []
        for _ in contexts:
            n = self.rng.randint(0, self.budget)
            parents = [self.rng.randint(-1, i - 1) for i in range(n)]
            trees.append(DraftTree([self.rng.randrange(self.vocab) for _ in range(n)], parents))
        return trees

    def update(self, accepted):
        pass


class OracleTreeDrafter:
    """Trees that contain the true continuation (from a reference run) among wrong branches, cut at a
    random depth: long accepted paths, siblings before and after the right child, and rejections at
    every depth."""

    def __init__(self, references: dict[int, list[int]], vocab: int, seed: int = 0, max_depth: int = 6):
        self.refs, self.vocab, self.rng, self.max_depth = references, vocab, random.Random(seed), max_depth

    def propose(self, contexts):
        trees = []
        for ctx in contexts:
            ref = self.refs[ctx.request]
            pos = len(ctx.tokens)
            truth = ref[pos:pos + self.rng.randint(0, self.max_depth)]
            tokens, parents = [], []
            parent = -1
            for tok in truth:
                # a wrong sibling before the right child, sometimes with a child of its own
                if self.rng.random() < 0.5:
                    tokens.append((tok + 1 + self.rng.randrange(self.vocab - 1)) % self.vocab)
                    parents.append(parent)
                    if self.rng.random() < 0.3:
                        tokens.append(self.rng.randrange(self.vocab))
                        parents.append(len(tokens) - 2)
                if self.rng.random() < 0.15:
                    tok = (tok + 1) % self.vocab  # corrupt: the path is cut here
                tokens.append(tok)
                parents.append(parent)
                parent = len(tokens) - 1
            trees.append(DraftTree(tokens, parents))
        return trees

    def update(self, accepted):
        pass


def assert_greedy_equal_up_to_ties(model, got: list[list[int]], want: list[list[int]], prompt_lens: list[int],
                                   rel_margin: float) -> None:
    """Greedy sequences from two attention implementations in fp16/bf16 may part where the model's top
    two logits are a rounding error apart. Equal, or parted only at such a near tie: the reference's
    top-2 gap at the first differing position is within ``rel_margin * (1 + |top-1 logit|)``."""
    dev = next(model.parameters()).device
    for b, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w), f"request {b}: {len(g)} vs {len(w)} tokens"
        k = next((i for i, (x, y) in enumerate(zip(g, w)) if x != y), None)
        if k is None:
            continue
        assert k >= prompt_lens[b], f"request {b}: the prompt itself differs at {k}"
        with torch.no_grad():
            logits = model(torch.tensor([w[:k]], device=dev)).logits[0, -1].float()
        top = logits.topk(2).values
        margin = rel_margin * (1 + abs(float(top[0])))
        gap = float(top[0] - top[1])
        assert gap <= margin and float(logits[g[k]]) >= float(top[0]) - margin, (
            f"request {b} parts from the reference at position {k} ({g[k]} vs {w[k]}) where the reference's "
            f"top-2 logit gap is {gap:.4g} and token {g[k]} is {float(top[0] - logits[g[k]]):.4g} below the top: "
            "not a rounding tie"
        )
