"""Multi-token heads: ``k`` small modules that read the base model's final hidden state at position
``t`` and predict the tokens at ``t + 2 ... t + k + 1`` (the base LM head already predicts ``t + 1``).

Architectures (``arch``):

* ``resblock`` (Medusa): ``h + SiLU(W h + b)`` with ``W`` zero-initialised, so an untrained head starts
  as the identity and predicts what the LM head predicts; then an output projection.
* ``layer`` (multi-token prediction, one decoder layer per head): a pre-norm attention block and a
  pre-norm gated MLP, both with zero-initialised output projections. The attention sees only the
  head's own position (it reduces to ``o(v(x))``), so drafting needs no per-head KV cache: the
  verification forward hands over one hidden state per request, not a history.

Output projection: the base model's LM head, frozen and shared by every head (never saved), either
whole or restricted to a **frequency-ranked vocabulary subset** (``vocab=N``: the rows of the ``N`` most
frequent tokens of the training data). On a 49k vocabulary the projection is most of a head's cost;
tokens outside the subset are never drafted. Both use the same trained head bodies, so one training
run serves both (`Heads.use_full_vocab`). Heads never change what `verispec.generate` outputs, only
how many tokens a step emits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

__all__ = ["HeadsConfig", "Heads", "init_heads", "load", "model_fingerprint"]

ARCHS = ("resblock", "layer")
CONFIG_NAME = "heads_config.json"
WEIGHTS_NAME = "heads.safetensors"
_FINGERPRINT_ROWS = 16


@dataclass
class HeadsConfig:
    """What a heads file was trained for; `load` checks it against the model it is given."""

    base_model: str
    hidden_size: int
    vocab_size: int
    num_heads: int
    arch: str = "resblock"
    subset_size: Optional[int] = None  # None = the base LM head is shared
    exit_layer: Optional[int] = None  # early-exit self-drafting: the hidden state after this many layers
    intermediate_size: Optional[int] = None  # "layer" heads only
    accuracy: Optional[list[list[float]]] = None  # measured top-1..top-10 hit rate per head (eval)
    training: dict[str, Any] = field(default_factory=dict)  # data, steps, wall time: what it cost

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _hidden_size(model: nn.Module) -> int:
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    cfg = get() if callable(get) else cfg
    for name in ("hidden_size", "n_embd", "d_model"):
        v = getattr(cfg, name, None)
        if v:
            return int(v)
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__} from its config")


def model_fingerprint(model: nn.Module) -> torch.Tensor:
    """float32 ``[16, d]``: the first rows of the model's LM head. Two models with the same shapes but
    different weights (another fine-tune) differ here; fp32 and bf16 copies of one model do not."""
    w = model.get_output_embeddings().weight
    return w[:_FINGERPRINT_ROWS].detach().float().cpu().contiguous()


class ResBlock(nn.Module):
    """Medusa's head body: ``h + SiLU(W h + b)``, ``W`` zero-initialised (identity at start)."""

    def __init__(self, d: int):
        super().__init__()
        self.linear = nn.Linear(d, d)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + nn.functional.silu(self.linear(h))


class LayerBlock(nn.Module):
    """A pre-norm decoder layer whose attention sees only its own position (softmax over one key is 1,
    so attention is ``o(v(norm(h)))``), then a gated MLP; both output projections start at zero."""

    def __init__(self, d: int, intermediate: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d, eps=1e-5)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.RMSNorm(d, eps=1e-5)
        self.gate = nn.Linear(d, intermediate, bias=False)
        self.up = nn.Linear(d, intermediate, bias=False)
        self.down = nn.Linear(intermediate, d, bias=False)
        for lin in (self.v, self.gate, self.up):
            nn.init.normal_(lin.weight, std=d**-0.5)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.down.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.o(self.v(self.attn_norm(h)))
        x = self.mlp_norm(h)
        return h + self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class Heads(nn.Module):
    """``num_heads`` draft heads on one base model (see the module docstring).

    ``forward(hidden [..., d]) -> logits [..., k, V']`` where ``V'`` is the model's vocabulary (shared
    LM head) or the subset size; `token_ids` maps subset columns back to token ids.
    """

    def __init__(self, config: HeadsConfig, lm_head: Optional[nn.Module] = None,
                 vocab_ids: Optional[torch.Tensor] = None):
        super().__init__()
        if config.arch not in ARCHS:
            raise ValueError(f"heads arch must be one of {ARCHS}, got {config.arch!r}")
        if config.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {config.num_heads}")
        self.config = config
        d, k = config.hidden_size, config.num_heads
        if config.arch == "resblock":
            self.blocks = nn.ModuleList(ResBlock(d) for _ in range(k))
        else:
            inter = config.intermediate_size or 2 * d
            config.intermediate_size = inter
            self.blocks = nn.ModuleList(LayerBlock(d, inter) for _ in range(k))
        # Early exit: an adapter maps the hidden state after `exit_layer` layers to what the final
        # norm + LM head expect (zero-initialised residual, like the heads).
        self.adapter = ResBlock(d) if config.exit_layer is not None else None
        if lm_head is None:
            raise ValueError("heads project through the base model's LM head: pass lm_head")
        object.__setattr__(self, "_lm_head", lm_head)  # not a submodule: frozen, shared, never saved
        self.use_full_vocab = config.subset_size is None
        if config.subset_size is None:
            self.register_buffer("vocab_ids", torch.empty(0, dtype=torch.long), persistent=False)
            self.register_buffer("proj_weight", torch.empty(0), persistent=False)
            self.register_buffer("proj_bias", None, persistent=False)
        else:
            if vocab_ids is None or vocab_ids.numel() != config.subset_size:
                raise ValueError(f"a vocabulary subset of {config.subset_size} tokens needs vocab_ids of that size")
            vocab_ids = vocab_ids.to(torch.long)
            if int(vocab_ids.min()) < 0 or int(vocab_ids.max()) >= config.vocab_size:
                raise ValueError(f"vocab_ids must lie in 0..{config.vocab_size - 1}")
            w = lm_head.weight.detach()
            self.register_buffer("vocab_ids", vocab_ids.clone())
            self.register_buffer("proj_weight", w[vocab_ids.to(w.device)].clone(), persistent=False)
            bias = getattr(lm_head, "bias", None)
            self.register_buffer("proj_bias", None if bias is None else bias.detach()[vocab_ids.to(w.device)].clone(),
                                 persistent=False)

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def out_size(self) -> int:
        return self.config.vocab_size if self.use_full_vocab else int(self.config.subset_size)

    def body(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., k, d]``: every head's hidden state before its output projection."""
        return torch.stack([blk(hidden) for blk in self.blocks], dim=-2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.body(hidden)
        if self.use_full_vocab:
            return self._lm_head(x)
        return nn.functional.linear(x, self.proj_weight, self.proj_bias)

    def token_ids(self, cols: torch.Tensor) -> torch.Tensor:
        """Token ids of output columns (the identity with the full LM head)."""
        return cols if self.use_full_vocab else self.vocab_ids[cols]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- files ---------------------------------------------------------------------------------------------
    def save(self, directory: Union[str, Path], fingerprint: Optional[torch.Tensor] = None) -> Path:
        """Write ``heads.safetensors`` and ``heads_config.json`` into ``directory`` (created)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if fingerprint is None and self._lm_head is not None:
            fingerprint = self._lm_head.weight[:_FINGERPRINT_ROWS].detach().float().cpu()
        if fingerprint is not None:
            tensors["base_fingerprint"] = fingerprint.contiguous()
        save_file(tensors, str(out / WEIGHTS_NAME))
        (out / CONFIG_NAME).write_text(self.config.to_json())
        return out


def init_heads(model: nn.Module, num_heads: int = 4, arch: str = "resblock", vocab: Optional[int] = None,
               token_counts: Optional[torch.Tensor] = None, exit_layer: Optional[int] = None,
               seed: int = 0) -> Heads:
    """Fresh heads for ``model`` (on its device and dtype).

    Parameters
    ----------
    model : the base transformers causal LM.
    num_heads : heads; head ``i`` (1-based) predicts the token ``i + 1`` positions after its input.
    arch : ``"resblock"`` (Medusa) or ``"layer"`` (one decoder layer per head).
    vocab : None = project through the whole LM head; ``N`` = through its rows of the ``N`` most
        frequent tokens of ``token_counts`` (int ``[V]``, required then).
    exit_layer : early-exit self-drafting from the hidden state after this many decoder layers.
    """
    from verispec.hf.model import check_model, model_vocab_size

    check_model(model)
    lm_head = model.get_output_embeddings()
    V = model_vocab_size(model)
    d = _hidden_size(model)
    layers = _num_layers(model)
    if exit_layer is not None and not 1 <= exit_layer < layers:
        raise ValueError(f"exit_layer must be in 1..{layers - 1} for a {layers}-layer model, got {exit_layer}")
    if arch not in ARCHS:
        raise ValueError(f"heads arch must be one of {ARCHS}, got {arch!r}")
    vocab_ids = None
    if vocab is not None:
        if not 1 <= vocab <= V:
            raise ValueError(f"vocab subset size must be in 1..{V}, got {vocab}")
        if token_counts is None:
            raise ValueError("a vocabulary subset needs token_counts (token frequencies of the training data)")
        vocab_ids = torch.sort(torch.argsort(token_counts[:V].double(), descending=True, stable=True)[:vocab]).values
    cfg = HeadsConfig(base_model=_model_name(model), hidden_size=d, vocab_size=V, num_heads=int(num_heads), arch=arch,
                      subset_size=None if vocab is None else int(vocab), exit_layer=exit_layer)
    p = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = Heads(cfg, lm_head, vocab_ids)
    return heads.to(device=p.device, dtype=p.dtype)


def load(directory: Union[str, Path], model: nn.Module, *, check_fingerprint: bool = True) -> Heads:
    """Heads saved by `Heads.save`, attached to ``model`` (its device and dtype).

    Raises ValueError when the file was trained for another model: hidden size, vocabulary, layer
    count or (``check_fingerprint``) the LM head's weights differ.
    """
    from safetensors.torch import load_file

    from verispec.hf.model import model_vocab_size

    d = Path(directory)
    cfg_file, w_file = d / CONFIG_NAME, d / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.exists():
            raise FileNotFoundError(f"{d} is not a heads directory: {f.name} is missing")
    try:
        raw = json.loads(cfg_file.read_text())
        cfg = HeadsConfig(**raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{cfg_file}: not a heads config ({exc})") from None
    V, hid = model_vocab_size(model), _hidden_size(model)
    where = f"heads in {d} (trained for {cfg.base_model})"
    if cfg.hidden_size != hid:
        raise ValueError(f"{where}: hidden size {cfg.hidden_size}, but this model's is {hid}")
    if cfg.vocab_size != V:
        raise ValueError(f"{where}: vocabulary of {cfg.vocab_size} tokens, but this model's has {V}")
    if cfg.exit_layer is not None and cfg.exit_layer >= _num_layers(model):
        raise ValueError(f"{where}: exit layer {cfg.exit_layer}, but this model has {_num_layers(model)} layers")
    tensors = load_file(str(w_file))
    fp = tensors.pop("base_fingerprint", None)
    lm_head = model.get_output_embeddings()
    if check_fingerprint and fp is not None:
        mine = model_fingerprint(model)
        if mine.shape != fp.shape or float((mine - fp).abs().max()) > 2e-2 * max(1e-6, float(fp.abs().max())):
            raise ValueError(f"{where}: the LM head's weights differ from the model the heads were trained on "
                             "(another checkpoint of the same shape?); pass check_fingerprint=False to load anyway")
    vocab_ids = tensors.get("vocab_ids")
    heads = Heads(cfg, lm_head, vocab_ids)
    missing, unexpected = heads.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    p = next(model.parameters())
    return heads.to(device=p.device, dtype=p.dtype).eval()


def _model_name(model: nn.Module) -> str:
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    return str(name)


def _num_layers(model: nn.Module) -> int:
    cfg = model.config
    get = getattr(cfg, "get_text_config", None)
    cfg = get() if callable(get) else cfg
    return int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0))


def per_head_topk(logits: torch.Tensor, targets: torch.Tensor, heads: Heads, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """float ``[k, len(ks)]``: hits of each head's top-k among ``targets [N, k]`` (token ids, -1 = none),
    summed (divide by the count of valid targets per head)."""
    out = torch.zeros(logits.shape[-2], len(ks), dtype=torch.float64)
    top = logits.topk(max(ks), dim=-1).indices  # [N, k, max(ks)]
    ids = heads.token_ids(top)
    hit = ids == targets.unsqueeze(-1)
    for j, kk in enumerate(ks):
        out[:, j] = hit[..., :kk].any(-1).sum(0).double().cpu()
    return out
