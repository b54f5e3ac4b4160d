"""A lean decoder for Llama-architecture models (SmolLM2 is one) on CPU: the fast path.

Why: one chat decodes one token at a time, and on a small CPU that is bound by reading the
weights from memory (fp32 SmolLM2: 538 MB a token) plus Python overhead per module. This runs
the same maths as transformers' LlamaForCausalLM over the same weights, with fused QKV and
gate/up projections, a preallocated KV cache, and optional int8 weights (4x less to read).

LoRA adapters stay exact: their A/B matrices are applied beside the (quantized) base weights,
y = W x + B (A x) * scale, never merged, so one base serves every adapter and switching costs
nothing. Adapters with features beyond plain LoRA are refused (`UnsupportedAdapter`); the engine
then serves them through peft instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.serving import kernels
from training.serving.kernels import Int8Weight

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Which fused matrix each projection lives in, and in what order.
FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
         "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}  # fmt: skip


class UnsupportedAdapter(ValueError):
    """The adapter uses a LoRA feature this decoder does not implement."""


def supports(model: Any) -> bool:
    """True when `model` is a plain Llama this decoder reproduces exactly."""
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    return (
        getattr(config, "model_type", None) == "llama"
        and config.hidden_act == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and rope.get("rope_type", "default") == "default"
        and getattr(config, "pretraining_tp", 1) == 1
    )


@dataclass
class _Lora:
    """One adapter on one fused matrix: out += (x @ a.T) @ bt (the scale folded into bt)."""

    a: torch.Tensor  # [r_total, in]
    bt: torch.Tensor  # [r_total, out]: B transposed, block-diagonal across the fused projections


@dataclass
class LoraAdapter:
    """A plain LoRA adapter in this decoder's fused layout: per layer, per fused matrix."""

    layers: list[dict[str, _Lora]] = field(default_factory=list)
    _table: torch.Tensor | None = None

    def nbytes(self) -> int:
        return sum(m.a.nbytes + m.bt.nbytes for layer in self.layers for m in layer.values())

    def table(self) -> torch.Tensor:
        """[layers, fused matrices, 3] int64: where each matrix's A and B-transposed are, and
        its rank (zeros where the adapter leaves a matrix alone), as the kernel reads them."""
        if self._table is None:
            table = torch.zeros(len(self.layers), len(FUSED), 3, dtype=torch.int64)
            for i, layer in enumerate(self.layers):
                for j, name in enumerate(FUSED):
                    lora = layer.get(name)
                    if lora is not None:
                        table[i, j] = torch.tensor(
                            [lora.a.data_ptr(), lora.bt.data_ptr(), lora.a.shape[0]]
                        )
            self._table = table
        return self._table


class _RowAdapters:
    """Each row's adapter in one step, ready to add each row's LoRA update to a projection:
    with the kernel, one call per projection for all rows whatever their adapters; without it,
    grouped by adapter in PyTorch (a gather and a scatter per adapter)."""

    def __init__(self, adapters: list[LoraAdapter | None], no_adapter: torch.Tensor) -> None:
        self.rows = len(adapters)
        self.table: torch.Tensor | None = None
        self.groups: list[tuple[LoraAdapter, torch.Tensor | None]] = []
        present = [a for a in adapters if a is not None]
        if not present:
            return
        if kernels.kernel() is not None:
            tables = [no_adapter if a is None else a.table() for a in adapters]
            self.table = torch.stack(tables, dim=-1)  # [layers, matrices, 3, rows]
            return
        rows: dict[int, tuple[LoraAdapter, list[int]]] = {}
        for row, adapter in enumerate(adapters):
            if adapter is not None:
                rows.setdefault(id(adapter), (adapter, []))[1].append(row)
        if len(rows) == 1 and len(present) == len(adapters):  # every row: no gather, no scatter
            self.groups = [(present[0], None)]
        else:
            self.groups = [(a, torch.tensor(where)) for a, where in rows.values()]

    def add(self, x: torch.Tensor, out: torch.Tensor, layer: int, name: str) -> torch.Tensor:
        """out (the base product of x) plus each row's LoRA update of matrix `name`."""
        if self.table is not None:
            at = (layer * len(FUSED) + _MATRIX[name]) * 3 * self.rows
            kernels.lora_rows(x.contiguous(), out, self.table, at)
            return out
        for adapter, where in self.groups:
            lora = adapter.layers[layer].get(name)
            if lora is None:
                continue
            if where is None:
                out = out + F.linear(x, lora.a) @ lora.bt
            else:
                out.index_add_(0, where, F.linear(x[where], lora.a) @ lora.bt)
        return out


_MATRIX = {name: index for index, name in enumerate(FUSED)}


class _Linear:
    """A (fused) projection: fp32 or int8 base weight, plus the active adapter's LoRA."""

    def __init__(self, weight: torch.Tensor, int8: bool) -> None:
        self.out_features, self.in_features = weight.shape
        self.int8 = Int8Weight(weight) if int8 else None
        self.weight = weight.contiguous() if not int8 else torch.empty(0)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        return self.int8(x) if self.int8 is not None else F.linear(x, self.weight)

    def rows(self, x: torch.Tensor, layer: int, name: str, adapters: _RowAdapters) -> torch.Tensor:
        """Each row of x with its own adapter's LoRA: the base weight read once for all rows."""
        return adapters.add(x, self.base(x), layer, name)


class FastLlama:
    """Prefill and decode steps for a batch of sequences over one preallocated KV cache.

    The cache has one slot per sequence; the scheduler (training.serving.batching) keeps the
    sequences it decodes in slots 0..B-1 (`move` closes a gap), so a decode step reads the cache
    through views, never through a gathered copy. Each row of a step may use its own adapter (or
    none): the base weights are read once for the whole batch, and each adapter's low-rank
    update is added to its own rows (the S-LoRA / Punica idea, grouped by adapter)."""

    def __init__(self, model: Any, int8: bool = False, max_len: int | None = None) -> None:
        config = model.config
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or self.hidden // self.heads
        self.eps = config.rms_norm_eps
        self.max_len = max_len or config.max_position_embeddings
        self.dtype = torch.float32
        self.int8 = int8
        inner = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
        lm_head = model.get_output_embeddings()
        with torch.no_grad():
            self.embed = inner.embed_tokens.weight.detach().float()
            self.final_norm = inner.norm.weight.detach().float()
            self.lm_head = _Linear(lm_head.weight.detach().float(), int8)
            self.layers = [self._layer(layer, int8) for layer in inner.layers]
        # A row without an adapter, in the kernel's table (LoraAdapter.table): all zeros.
        self._no_adapter = torch.zeros(len(self.layers), len(FUSED), 3, dtype=torch.int64)
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(
            config, "rope_theta", 10000.0
        )
        inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        freqs = torch.outer(torch.arange(self.max_len).float(), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()
        half = self.head_dim // 2
        # rotate_half(x) * sin == flip(halves of x) * sin_signed: two ops fewer a token.
        self.sin_signed = torch.cat([-self.sin[:, :half], self.sin[:, half:]], dim=-1)
        self.k_cache = torch.zeros(0)
        self.v_cache = torch.zeros(0)
        self.lengths: list[int] = []  # tokens each slot holds
        self._reserve(1, min(self.max_len, 512))

    @staticmethod
    def _layer(layer: Any, int8: bool) -> dict[str, Any]:
        attn, mlp = layer.self_attn, layer.mlp

        def weight(module: Any) -> torch.Tensor:
            # Inside peft the projection is a LoRA wrapper; its base_layer holds the weight.
            base = getattr(module, "base_layer", module)
            return base.weight.detach().float()

        return {
            "in_norm": layer.input_layernorm.weight.detach().float(),
            "post_norm": layer.post_attention_layernorm.weight.detach().float(),
            "qkv": _Linear(
                torch.cat([weight(attn.q_proj), weight(attn.k_proj), weight(attn.v_proj)]), int8
            ),
            "o": _Linear(weight(attn.o_proj), int8),
            "gate_up": _Linear(torch.cat([weight(mlp.gate_proj), weight(mlp.up_proj)]), int8),
            "down": _Linear(weight(mlp.down_proj), int8),
        }

    def _reserve(self, slots: int, needed: int) -> None:
        """Grow the KV cache (doubling) to hold `slots` sequences of `needed` positions."""
        have_slots = self.k_cache.shape[1] if self.k_cache.dim() == 5 else 0
        capacity = self.k_cache.shape[3] if self.k_cache.dim() == 5 else 0
        if slots <= have_slots and needed <= capacity:
            return
        size = capacity if needed <= capacity else min(self.max_len, max(needed, capacity * 2))
        count = have_slots if slots <= have_slots else max(slots, have_slots * 2)
        shape = (len(self.layers), count, self.kv_heads, size, self.head_dim)
        k, v = torch.zeros(shape), torch.zeros(shape)
        if capacity:
            k[:, :have_slots, :, :capacity] = self.k_cache
            v[:, :have_slots, :, :capacity] = self.v_cache
        self.k_cache, self.v_cache = k, v
        self.lengths += [0] * (count - len(self.lengths))

    def start(self, slot: int) -> None:
        """Make `slot` an empty sequence (a new request takes it)."""
        self._reserve(slot + 1, 1)
        self.lengths[slot] = 0

    def move(self, source: int, target: int) -> None:
        """Put the sequence in `source` into `target` (the scheduler closing a gap)."""
        n = self.lengths[source]
        self.k_cache[:, target, :, :n] = self.k_cache[:, source, :, :n]
        self.v_cache[:, target, :, :n] = self.v_cache[:, source, :, :n]
        self.lengths[target], self.lengths[source] = n, 0

    @torch.inference_mode()
    def step(
        self,
        tokens: list[int],
        adapters: list[LoraAdapter | None],
        chunk: Sequence[int] = (),
        chunk_adapter: LoraAdapter | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step of the scheduler, in one pass over the weights: the next token of each
        sequence in slots 0..B-1 (B = len(tokens), row b with `adapters[b]`), and a chunk of a
        prompt fed after what slot B holds (may be empty). The logits of each row's next token
        [B, vocab], and of the token after the chunk (None without one).

        The chunk's tokens ride in the same matrix products as the rows (each weight read once
        for all of them: the chunked prefill of Sarathi-Serve); only attention is computed
        apart. As few tensor ops as the maths allows: at small B they dominate."""
        rows, t = len(tokens), len(chunk)
        slot, start = rows, 0
        if t:
            self._reserve(slot + 1, 1)
            start = self.lengths[slot]
        lengths = self.lengths[:rows]
        span = max(lengths, default=0) + 1
        if max(span, start + t) > self.max_len:
            raise ValueError(f"context of {self.max_len} tokens exceeded")
        self._reserve(rows + (1 if t else 0), max(span, start + t))
        decoding = _Decoding(self, lengths) if rows else None
        filling = _Filling(self, slot, start, t) if t else None
        row_adapters = _RowAdapters([*adapters, *([chunk_adapter] * t)], self._no_adapter)
        x = self.embed[[*tokens, *chunk]]  # [B + T, hidden]
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (self.hidden,), layer["in_norm"], self.eps)
            qkv = layer["qkv"].rows(h, i, "qkv", row_adapters)
            parts = []
            if decoding is not None:
                parts.append(decoding.attend(i, qkv[:rows]))
            if filling is not None:
                parts.append(filling.attend(i, qkv[rows:]))
            attn = parts[0] if len(parts) == 1 else torch.cat(parts)
            x = x + layer["o"].rows(attn, i, "o", row_adapters)
            h = F.rms_norm(x, (self.hidden,), layer["post_norm"], self.eps)
            gate_up = layer["gate_up"].rows(h, i, "gate_up", row_adapters)
            inter = gate_up.shape[-1] // 2
            act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
            x = x + layer["down"].rows(act, i, "down", row_adapters)
        for row in range(rows):
            self.lengths[row] += 1
        if t:
            self.lengths[slot] = start + t
            x = x[: rows + 1] if t == 1 else torch.cat([x[:rows], x[-1:]])
        logits = self.lm_head.base(F.rms_norm(x, (self.hidden,), self.final_norm, self.eps))
        return logits[:rows], (logits[rows] if t else None)

    # -- adapters ----------------------------------------------------------------------------

    def load_adapter(self, folder: Path) -> LoraAdapter:
        """Read a PEFT LoRA adapter folder into this decoder's fused layout."""
        from safetensors.torch import load_file

        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        _check_plain_lora(config)
        # Keys look like base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight.
        tensors = {
            key[key.index("layers.") :] if "layers." in key else key: value
            for key, value in load_file(str(folder / "adapter_model.safetensors")).items()
        }
        r_default, alpha_default = config["r"], config.get("lora_alpha", config["r"])
        adapter = LoraAdapter()
        for index in range(len(self.layers)):
            fused: dict[str, _Lora] = {}
            for name, parts in FUSED.items():
                pieces: list[tuple[torch.Tensor, torch.Tensor] | None] = []
                for part in parts:
                    group = (
                        "self_attn" if part in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
                    )
                    key = f"layers.{index}.{group}.{part}"
                    a = tensors.get(f"{key}.lora_A.weight")
                    b = tensors.get(f"{key}.lora_B.weight")
                    if a is None or b is None:
                        pieces.append(None)
                        continue
                    r = _pattern(config.get("rank_pattern") or {}, key, r_default)
                    alpha = _pattern(config.get("alpha_pattern") or {}, key, alpha_default)
                    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
                    pieces.append((a.float(), b.float() * scale))
                if any(p is not None for p in pieces):
                    fused[name] = self._fuse(index, name, pieces)
            adapter.layers.append(fused)
        unused = [k for k in tensors if not any(p in k for p in PROJECTIONS)]
        if unused:
            raise UnsupportedAdapter(f"adapter weights outside the projections: {unused[0]}")
        return adapter

    def _fuse(self, index: int, name: str, pieces: list[Any]) -> _Lora:
        """Stack A matrices; place B matrices block-diagonally so one matmul pair covers all."""
        layer = self.layers[index][name]
        sizes = _part_sizes(self, name, layer.out_features)
        a_list = [piece[0] for piece in pieces if piece is not None]
        if any(a.shape[1] != layer.in_features for a in a_list):
            raise ValueError(f"layer {index} {name}: LoRA A does not fit this base model")
        r_total = sum(a.shape[0] for a in a_list)
        b = torch.zeros(layer.out_features, r_total)
        row, col = 0, 0
        for piece, size in zip(pieces, sizes, strict=True):
            if piece is not None:
                rank = piece[0].shape[0]
                b[row : row + size, col : col + rank] = piece[1]
                col += rank
            row += size
        return _Lora(a=torch.cat(a_list).contiguous(), bt=b.T.contiguous())


class _Decoding:
    """Attention for one new token of each sequence in slots 0..B-1 (a decode step): with the
    kernel, one call a layer, each row over its own length; without it, PyTorch over the
    longest row's length, the shorter rows masked."""

    def __init__(self, decoder: FastLlama, lengths: list[int]) -> None:
        self.d = decoder
        self.rows = len(lengths)
        self.span = max(lengths) + 1
        self.at = torch.tensor(lengths)
        self.kernel = kernels.kernel() is not None
        if self.kernel:
            return
        self.every = torch.arange(self.rows)
        self.cos = decoder.cos[self.at].unsqueeze(1)  # [B, 1, hd]
        self.sin = decoder.sin_signed[self.at].unsqueeze(1)
        self.mask = None
        self.same = min(lengths) + 1 == self.span  # all at one position: plain slicing writes
        if not self.same:  # rows of different lengths: -inf past each one's own
            past = torch.arange(self.span)[None, :] > self.at[:, None]
            mask = torch.zeros(self.rows, self.span).masked_fill_(past, float("-inf"))
            self.mask = mask.view(self.rows, 1, 1, self.span)

    def attend(self, i: int, qkv: torch.Tensor) -> torch.Tensor:
        d, rows = self.d, self.rows
        if self.kernel:
            return kernels.attend_rows(
                qkv.contiguous(), d.k_cache[i], d.v_cache[i], self.at, d.cos, d.sin, d.heads
            )
        hd, heads, kv_heads = d.head_dim, d.heads, d.kv_heads
        n_qk, half, group = heads + kv_heads, hd // 2, heads // kv_heads
        qkv = qkv.view(rows, n_qk + kv_heads, hd)
        qk = qkv[:, :n_qk]
        # rotate_half(x) * sin == flip(halves of x) * sin_signed
        qk = qk * self.cos + qk.reshape(rows, n_qk, 2, half).flip(2).view(rows, n_qk, hd) * self.sin
        if self.same:
            d.k_cache[i, :rows, :, self.span - 1] = qk[:, heads:]
            d.v_cache[i, :rows, :, self.span - 1] = qkv[:, n_qk:]
        else:
            d.k_cache[i, self.every, :, self.at] = qk[:, heads:]
            d.v_cache[i, self.every, :, self.at] = qkv[:, n_qk:]
        q = qk[:, :heads].reshape(rows, kv_heads, group, hd)  # each kv head serves `group` q
        scores = torch.matmul(q, d.k_cache[i, :rows, :, : self.span].transpose(2, 3))
        scores = scores.mul_(1.0 / math.sqrt(hd))
        if self.mask is not None:
            scores = scores.add_(self.mask)
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, d.v_cache[i, :rows, :, : self.span]).view(rows, d.q_size)


class _Filling:
    """Attention for a chunk of a prompt fed after what one slot holds (prefill)."""

    def __init__(self, decoder: FastLlama, slot: int, start: int, t: int) -> None:
        self.d, self.slot, self.start, self.t = decoder, slot, start, t
        self.end = start + t
        self.cos, self.sin = decoder.cos[start : self.end], decoder.sin[start : self.end]
        # A chunk after earlier ones sees all of them, and itself causally.
        self.mask = None
        if start:
            self.mask = torch.arange(self.end)[None, :] <= torch.arange(start, self.end)[:, None]

    def _rope(self, x: torch.Tensor) -> torch.Tensor:  # x: [heads, T, head_dim]
        half = self.d.head_dim // 2
        return x * self.cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * self.sin

    def attend(self, i: int, qkv: torch.Tensor) -> torch.Tensor:
        d, t, slot, start, end = self.d, self.t, self.slot, self.start, self.end
        q = qkv[:, : d.q_size].view(t, d.heads, d.head_dim).transpose(0, 1)
        k = qkv[:, d.q_size : d.q_size + d.kv_size].view(t, d.kv_heads, d.head_dim)
        v = qkv[:, d.q_size + d.kv_size :].view(t, d.kv_heads, d.head_dim)
        d.k_cache[i, slot, :, start:end] = self._rope(k.transpose(0, 1))
        d.v_cache[i, slot, :, start:end] = v.transpose(0, 1)
        attn = F.scaled_dot_product_attention(
            self._rope(q).unsqueeze(0),
            d.k_cache[i, slot : slot + 1, :, :end],
            d.v_cache[i, slot : slot + 1, :, :end],
            attn_mask=self.mask,
            is_causal=self.mask is None and t > 1,
            enable_gqa=True,
            scale=1.0 / math.sqrt(d.head_dim),
        )
        return attn[0].transpose(0, 1).reshape(t, d.q_size)


def _part_sizes(decoder: FastLlama, name: str, out_features: int) -> list[int]:
    if name == "qkv":
        return [decoder.q_size, decoder.kv_size, decoder.kv_size]
    if name == "gate_up":
        return [out_features // 2, out_features // 2]
    return [out_features]


def _pattern(patterns: dict[str, Any], key: str, default: Any) -> Any:
    for pattern, value in patterns.items():
        if key.endswith(pattern) or pattern in key:
            return value
    return default


def _check_plain_lora(config: dict[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedAdapter(f"peft_type {config.get('peft_type')} is not LoRA")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise UnsupportedAdapter(f"{flag} is not supported by the fast decoder")
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise UnsupportedAdapter("adapters that train biases or whole modules are not supported")
    if config.get("layer_replication") or config.get("use_qalora"):
        raise UnsupportedAdapter("layer replication / QA-LoRA is not supported")
