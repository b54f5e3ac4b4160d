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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.serving.int8_kernels import Int8Weight

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
    """One adapter on one fused matrix: out += (x @ a.T) @ b.T (scale folded into b)."""

    a: torch.Tensor  # [r_total, in]
    b: torch.Tensor  # [out, r_total], block-diagonal across the fused projections


@dataclass
class LoraAdapter:
    """A plain LoRA adapter in this decoder's fused layout: per layer, per fused matrix."""

    layers: list[dict[str, _Lora]] = field(default_factory=list)


class _Linear:
    """A (fused) projection: fp32 or int8 base weight, plus the active adapter's LoRA."""

    def __init__(self, weight: torch.Tensor, int8: bool) -> None:
        self.out_features, self.in_features = weight.shape
        self.int8 = Int8Weight(weight) if int8 else None
        self.weight = weight.contiguous() if not int8 else torch.empty(0)

    def __call__(self, x: torch.Tensor, lora: _Lora | None) -> torch.Tensor:
        out = self.int8(x) if self.int8 is not None else F.linear(x, self.weight)
        if lora is not None:
            out = out + F.linear(F.linear(x, lora.a), lora.b)
        return out


class FastLlama:
    """Prefill and one-token decode steps over a preallocated cache (batch size 1)."""

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
        self._reserve(min(self.max_len, 512))
        self.length = 0
        self.adapter: LoraAdapter | None = None

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

    def _reserve(self, needed: int) -> None:
        """Grow the KV cache (doubling) so it holds `needed` positions; it starts small."""
        capacity = self.k_cache.shape[3] if self.k_cache.dim() == 5 else 0
        if needed <= capacity:
            return
        size = min(self.max_len, max(needed, capacity * 2))
        shape = (len(self.layers), 1, self.kv_heads, size, self.head_dim)
        k, v = torch.zeros(shape), torch.zeros(shape)
        if capacity:
            k[:, :, :, :capacity] = self.k_cache
            v[:, :, :, :capacity] = self.v_cache
        self.k_cache, self.v_cache = k, v

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden,), weight, self.eps)

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        # x: [1, heads, T, head_dim]
        t = x.shape[2]
        cos, sin = self.cos[start : start + t], self.sin[start : start + t]
        half = self.head_dim // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, ids: list[int]) -> torch.Tensor:
        """Feed `ids` after what the cache holds; the last position's logits [vocab]."""
        start, t = self.length, len(ids)
        if start + t > self.max_len:
            raise ValueError(f"context of {self.max_len} tokens exceeded")
        self._reserve(start + t)
        if t == 1:
            return self._step(ids[0])
        if start > 0:
            raise ValueError("prefill only at the start; feed later tokens one at a time")
        return self._prefill(ids)

    def _step(self, token: int) -> torch.Tensor:
        """One decode step, with as few tensor ops as the maths allows (they dominate here)."""
        pos, hd, heads, kv_heads = self.length, self.head_dim, self.heads, self.kv_heads
        n_qk, half, group = heads + kv_heads, hd // 2, heads // kv_heads
        scale = 1.0 / math.sqrt(hd)
        cos, sin = self.cos[pos], self.sin_signed[pos]
        x = self.embed[token : token + 1]
        for i, layer in enumerate(self.layers):
            lora = self.adapter.layers[i] if self.adapter is not None else {}
            h = F.rms_norm(x, (self.hidden,), layer["in_norm"], self.eps)
            qkv = layer["qkv"](h, lora.get("qkv")).view(-1, hd)  # [q heads + 2 kv heads, hd]
            qk = qkv[:n_qk]
            qk = qk * cos + qk.view(n_qk, 2, half).flip(1).view(n_qk, hd) * sin
            self.k_cache[i, 0, :, pos] = qk[heads:]
            self.v_cache[i, 0, :, pos] = qkv[n_qk:]
            q = qk[:heads].view(kv_heads, group, hd)  # grouped: each kv head serves `group` q
            scores = torch.matmul(q, self.k_cache[i, 0, :, : pos + 1].transpose(1, 2))
            probs = torch.softmax(scores.mul_(scale), dim=-1)
            attn = torch.matmul(probs, self.v_cache[i, 0, :, : pos + 1]).view(1, self.q_size)
            x = x + layer["o"](attn, lora.get("o"))
            h = F.rms_norm(x, (self.hidden,), layer["post_norm"], self.eps)
            gate_up = layer["gate_up"](h, lora.get("gate_up"))
            inter = gate_up.shape[-1] // 2
            x = x + layer["down"](F.silu(gate_up[:, :inter]) * gate_up[:, inter:], lora.get("down"))
        self.length = pos + 1
        return self.lm_head(F.rms_norm(x, (self.hidden,), self.final_norm, self.eps), None)[0]

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        start, t = self.length, len(ids)
        x = self.embed[torch.tensor(ids)]  # [T, hidden]
        end = start + t
        for i, layer in enumerate(self.layers):
            lora = self.adapter.layers[i] if self.adapter is not None else {}
            h = self._norm(x, layer["in_norm"])
            qkv = layer["qkv"](h, lora.get("qkv"))
            q = qkv[:, : self.q_size].view(t, self.heads, self.head_dim).transpose(0, 1)
            k = qkv[:, self.q_size : self.q_size + self.kv_size]
            v = qkv[:, self.q_size + self.kv_size :]
            k = k.view(t, self.kv_heads, self.head_dim).transpose(0, 1)
            v = v.view(t, self.kv_heads, self.head_dim).transpose(0, 1)
            q = self._rope(q.unsqueeze(0), start)
            self.k_cache[i, :, :, start:end] = self._rope(k.unsqueeze(0), start)
            self.v_cache[i, :, :, start:end] = v.unsqueeze(0)
            attn = F.scaled_dot_product_attention(
                q,
                self.k_cache[i, :, :, :end],
                self.v_cache[i, :, :, :end],
                is_causal=t > 1,
                enable_gqa=True,
                scale=1.0 / math.sqrt(self.head_dim),
            )
            attn = attn[0].transpose(0, 1).reshape(t, self.q_size)
            x = x + layer["o"](attn, lora.get("o"))
            h = self._norm(x, layer["post_norm"])
            gate_up = layer["gate_up"](h, lora.get("gate_up"))
            inter = gate_up.shape[-1] // 2
            x = x + layer["down"](F.silu(gate_up[:, :inter]) * gate_up[:, inter:], lora.get("down"))
        self.length = end
        last = self._norm(x[-1:], self.final_norm)
        return self.lm_head(last, None)[0]

    def reset(self) -> None:
        self.length = 0

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
        return _Lora(a=torch.cat(a_list).contiguous(), b=b)


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


class FastStepper:
    """The decoding.Stepper interface over a FastLlama, with one adapter (or none) active."""

    def __init__(self, decoder: FastLlama, adapter: LoraAdapter | None = None) -> None:
        self.decoder = decoder
        self.adapter = adapter

    def start(self, prompt_ids: list[int]) -> torch.Tensor:
        self.decoder.adapter = self.adapter
        self.decoder.reset()
        return self.decoder.forward(prompt_ids)

    def next(self, token: int) -> torch.Tensor:
        return self.decoder.forward([token])
