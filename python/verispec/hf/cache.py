"""A key/value cache with one length per request, for ragged batches of draft trees.

Hugging Face caches keep one sequence length for the whole batch, so a batch of prompts of different
lengths has to be left-padded and every later step drags the padding along. `RaggedCache` instead
stores request ``b``'s tokens at cache indices ``0 .. prefix_lens[b] - 1`` of its own row, whatever the
other requests hold. It is a `transformers.Cache`, so a stock model writes into it through its own
attention modules (``cache.update(k, v, layer_idx)``); *where* the new entries go is set by
the generate loop before each forward:

* `plan_prefill(rows)`: the forward is the prompts of some requests of one length (no padding);
  their K/V go to indices ``0..n-1`` of their rows and attention sees only those (the model's own causal attention runs unchanged);
* `plan_tree(T)`: the forward is ``T`` verification rows per request; row ``t`` of request
  ``b`` goes to index ``prefix_lens[b] + t`` (the layout `verispec.tree_attention` reads) and attention
  receives the whole buffer, trimmed to the longest request.

After verification `commit` moves the accepted path's entries behind the prefix (`verispec.commit_kv`),
and `select` drops finished requests from the batch.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from verispec.ops.commit_kv import commit_kv

__all__ = ["RaggedCache"]

# Grow the buffers in steps of this many positions, so a long generation reallocates rarely.
_GROW = 256


class _RaggedLayer(CacheLayerMixin):
    """One layer's K/V ``[B, Hkv, capacity, D]``; `update` writes where the owning cache's plan says."""

    is_sliding = False  # windows are applied by the attention function from positions, never by eviction

    def __init__(self, owner: RaggedCache, layer_idx: int):
        super().__init__()
        self._owner = owner
        self._layer_idx = layer_idx

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        o = self._owner
        _, h, _, d = key_states.shape
        shape = (o.batch_size_, h, o.capacity, d)
        self.keys = torch.zeros(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros((*shape[:3], value_states.shape[-1]), dtype=value_states.dtype,
                                  device=value_states.device)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._owner._write(self, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._owner._mask_sizes(query_length)

    def get_seq_length(self) -> int:
        return self._owner.get_seq_length()

    def get_max_length(self) -> int:
        return self._owner.capacity


class RaggedCache(Cache):
    """Per-request-length K/V cache for `verispec.generate` (contiguous layout ``[B, Hkv, S, D]``).

    Parameters
    ----------
    num_layers : number of attention layers that call ``update``.
    batch_size : number of requests.
    capacity : initial number of positions per request; grows on demand.
    device : where `prefix_lens` lives (the model's device).
    """

    def __init__(self, num_layers: int, batch_size: int, capacity: int, device: torch.device):
        self.batch_size_ = batch_size
        self.capacity = max(int(capacity), 1)
        super().__init__(layers=[_RaggedLayer(self, i) for i in range(num_layers)])
        self.prefix_lens = torch.zeros(batch_size, dtype=torch.int32, device=device)
        self._host_lens = [0] * batch_size
        self._plan: tuple = ("none",)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        # Models whose layer count differs from the config's (shared or skipped layers) still get a slot.
        while len(self.layers) <= layer_idx:
            self.layers.append(_RaggedLayer(self, len(self.layers)))
        return self.layers[layer_idx].update(key_states, value_states)

    # -- plans ----------------------------------------------------------------------------------------
    def plan_prefill(self, rows: list[int]) -> None:
        """The next forward is the prompts of requests ``rows`` (all of one length), written from index 0."""
        self._plan = ("prefill", torch.tensor(rows, dtype=torch.long, device=self.prefix_lens.device))

    def plan_tree(self, num_rows: int) -> None:
        """The next forward is ``num_rows`` padded verification rows per request."""
        need = max(self._host_lens) + num_rows
        if need > self.capacity:
            self._grow(need)
        idx = self.prefix_lens.long().view(-1, 1) + torch.arange(num_rows, device=self.prefix_lens.device)
        self._plan = ("tree", idx, need)

    def set_prefill_length(self, rows: list[int], n: int) -> None:
        for b in rows:
            self._host_lens[b] = n
        self.prefix_lens[rows] = n

    # -- called by the model's attention modules through Cache.update ---------------------------------
    def _write(self, layer: _RaggedLayer, k: torch.Tensor, v: torch.Tensor):
        kind = self._plan[0]
        if kind == "prefill":
            rows = self._plan[1]
            n = k.shape[-2]
            if n > self.capacity:
                self._grow(n)
            layer.keys[rows, :, :n] = k
            layer.values[rows, :, :n] = v
            return k, v
        if kind == "tree":
            _, idx, used = self._plan
            B, H, T, D = k.shape
            layer.keys.scatter_(2, idx.view(B, 1, T, 1).expand(B, H, T, D), k)
            layer.values.scatter_(2, idx.view(B, 1, T, 1).expand(B, v.shape[1], T, v.shape[-1]), v)
            return layer.keys[:, :, :used], layer.values[:, :, :used]
        raise RuntimeError("verispec RaggedCache: a model forward ran without a plan (use verispec.generate)")

    def _mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self._plan[0] == "tree":
            return self._plan[2], 0
        return query_length, 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self._plan[0] == "prefill" else max(self._host_lens, default=0)

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.get_seq_length(layer_idx)

    # -- storage --------------------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        new_cap = ((need + _GROW - 1) // _GROW) * _GROW
        for layer in self.layers:
            if layer.is_initialized:
                for name in ("keys", "values"):
                    old = getattr(layer, name)
                    new = old.new_zeros((*old.shape[:2], new_cap, old.shape[3]))
                    new[:, :, : old.shape[2]] = old
                    setattr(layer, name, new)
        self.capacity = new_cap

    def commit(self, path_rows: torch.Tensor, num_accepted: list[int], backend: str = "auto") -> None:
        """Move each request's accepted rows behind its prefix and extend its length.

        path_rows : int32 ``[B, P]``: root row 0 then the accepted nodes' rows, ``-1`` padded (trusted:
            built from `verify`'s output, so the host-side checks are skipped).
        num_accepted : per request the accepted nodes (already on the host), so the host copy of the
            lengths advances without reading the device.
        """
        keys = [l.keys for l in self.layers if l.is_initialized]
        values = [l.values for l in self.layers if l.is_initialized]
        self.prefix_lens = commit_kv(keys, values, self.prefix_lens, path_rows, backend=backend, validate=False)
        self._host_lens = [n + 1 + k for n, k in zip(self._host_lens, num_accepted)]
        self._plan = ("none",)

    def select(self, keep: list[int]) -> None:
        """Keep only the requests at indices ``keep`` (in that order)."""
        keep_t = torch.tensor(keep, dtype=torch.long).to(self.prefix_lens.device, non_blocking=True)
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys = layer.keys.index_select(0, keep_t)
                layer.values = layer.values.index_select(0, keep_t)
        self.prefix_lens = self.prefix_lens.index_select(0, keep_t)
        self._host_lens = [self._host_lens[i] for i in keep]
        self.batch_size_ = len(self._host_lens)

    def reset_plan(self) -> None:
        self._plan = ("none",)
