"""A Llama-family decoder (Llama, Qwen2, Mistral) over flattened tokens and a paged KV cache.

One forward takes the new tokens of several sequences at once, writes their keys and values into
the pool, and returns logits only at the positions asked for (the last prompt token on prefill, the
k + 1 checked positions on verify), so prefill never pays for the vocabulary head on every token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import AttentionBatch, paged_attention, write_kv
from models.config import ModelConfig, RopeScaling
from models.kv_cache import KVPool


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 whatever the weights' dtype, as the reference implementations do.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse rotary frequencies [D/2], with Llama-3 scaling applied when configured."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    if config.rope_scaling is not None:
        inv_freq = _llama3_scale(inv_freq, config.rope_scaling)
    return inv_freq


def _llama3_scale(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    # Long wavelengths are divided by `factor`, short ones kept, the band between interpolated.
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    interpolated = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    in_band = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(in_band, interpolated, scaled)


class Rotary(nn.Module):
    """Rotary position embedding in the rotate-half layout used by Hugging Face checkpoints."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
        angles = torch.outer(positions, rope_inv_freq(config))  # [max_pos, D/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [T, heads, D]; positions: [T]."""
        cos = self.cos[positions].unsqueeze(1)  # [T, 1, D/2]
        sin = self.sin[positions].unsqueeze(1)
        x1, x2 = x.float().chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return rotated.to(x.dtype)


class Linear(nn.Linear):
    """nn.Linear that never multiplies a lone row.

    On the CPU, a bfloat16 matmul of one row takes a different kernel from one of two or more
    rows and rounds differently (measured on the 1.5B's projections: a few outputs per row differ
    by one ulp at M = 1, none between M = 2 and M = 600). A target-only decode step has one row, a
    verify step k + 1, so without this, greedy speculative output could leave target-only output
    at a near tie. Padding to two rows costs nothing measurable: one row or two read the same
    weights.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x.expand(2, -1).contiguous(), self.weight, self.bias)[:1]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        # q, k and v projections fused into one matmul: one weight read per step instead of three.
        self.qkv_proj = Linear(
            config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias
        )
        # Llama's attention_bias covers the output projection too; Qwen2's bias stops at q, k, v.
        o_bias = config.attention_bias and config.architecture != "qwen2"
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=o_bias)
        self.scale = config.head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rotary: Rotary,
        batch: AttentionBatch,
        kv_pool: KVPool,
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = rotary(q.view(num_tokens, self.num_heads, self.head_dim), positions)
        k = rotary(k.view(num_tokens, self.num_kv_heads, self.head_dim), positions)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)

        k_slots, v_slots = kv_pool.layer_slots(self.layer)
        write_kv(k_slots, v_slots, k, v, batch)
        out = paged_attention(q, kv_pool.k[self.layer], kv_pool.v[self.layer], batch, self.scale)
        return self.o_proj(out.view(num_tokens, self.q_size))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        # gate and up projections fused: [2 * I, hidden].
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rotary: Rotary,
        batch: AttentionBatch,
        kv_pool: KVPool,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, rotary, batch, kv_pool)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Decoder-only transformer; parameters load from Hugging Face names (see `load_hf_weights`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = Rotary(config)
        # Weight [V_head, hidden]. Shares the embedding when tied; a drafter may keep only some
        # rows (see `restrict_head`) or quantize it (models.quantize).
        self.lm_head: nn.Module = Linear(config.hidden_size, config.vocab_size, bias=False)
        # Token id of each logits column when the head keeps a subset of rows; None: all, in order.
        self.head_token_ids: torch.Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        kv_pool: KVPool,
        logits_indices: torch.Tensor,
    ) -> torch.Tensor:
        """Run the new tokens and return logits at the chosen rows.

        input_ids, positions: [T]; logits_indices: [R] rows of T to score.
        Returns [R, V_head] float32 logits (V_head = V, or the restricted head's size).
        """
        x = self.embed_tokens(input_ids)  # [T, hidden]
        for layer in self.layers:
            x = layer(x, positions, self.rotary, batch, kv_pool)
        x = self.norm(x[logits_indices])  # the norm is per row, so select rows first
        return self.lm_head(x).float()

    def restrict_head(self, token_ids: torch.Tensor) -> None:
        """Score only `token_ids` [V_head] (sorted ids); logits column j then means token_ids[j]."""
        weight = self.lm_head.weight.data[token_ids.to(self.lm_head.weight.device)]
        head = Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device)
        head.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.lm_head = head
        self.head_token_ids = token_ids

    def load_hf_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy Hugging Face named tensors in, fusing q/k/v and gate/up projections."""
        weights = {name.removeprefix("model."): t for name, t in state_dict.items()}
        own = dict(self.named_parameters())
        with torch.no_grad():
            own["embed_tokens.weight"].copy_(weights.pop("embed_tokens.weight"))
            own["norm.weight"].copy_(weights.pop("norm.weight"))
            head = weights.pop("lm_head.weight", None)
            if head is None:
                self.lm_head.weight = self.embed_tokens.weight  # tied: share storage, no copy
            else:
                self.lm_head.weight.copy_(head)
            for i, layer in enumerate(self.layers):
                self._load_layer(layer, i, weights)
        weights = {k: v for k, v in weights.items() if "rotary_emb" not in k}
        if weights:
            raise ValueError(f"unexpected tensors in checkpoint: {sorted(weights)[:5]}")

    @staticmethod
    def _load_layer(layer: DecoderLayer, i: int, weights: dict[str, torch.Tensor]) -> None:
        prefix = f"layers.{i}."

        def take(name: str) -> torch.Tensor:
            return weights.pop(prefix + name)

        attn = layer.self_attn
        attn.qkv_proj.weight.copy_(
            torch.cat([take(f"self_attn.{p}_proj.weight") for p in "qkv"], dim=0)
        )
        if attn.qkv_proj.bias is not None:
            attn.qkv_proj.bias.copy_(
                torch.cat([take(f"self_attn.{p}_proj.bias") for p in "qkv"], dim=0)
            )
        attn.o_proj.weight.copy_(take("self_attn.o_proj.weight"))
        if attn.o_proj.bias is not None:
            attn.o_proj.bias.copy_(take("self_attn.o_proj.bias"))
        layer.mlp.gate_up_proj.weight.copy_(
            torch.cat([take("mlp.gate_proj.weight"), take("mlp.up_proj.weight")], dim=0)
        )
        layer.mlp.down_proj.weight.copy_(take("mlp.down_proj.weight"))
        layer.input_layernorm.weight.copy_(take("input_layernorm.weight"))
        layer.post_attention_layernorm.weight.copy_(take("post_attention_layernorm.weight"))


def build_model(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
) -> Transformer:
    """Create the model directly in `dtype` on `device` and load the weights."""
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to_empty(device=device).to(dtype)
    # Rotary tables are computed, not loaded: rebuild them (to_empty left them uninitialised).
    model.rotary = Rotary(config).to(device)
    model.load_hf_weights(state_dict)
    model.requires_grad_(False)
    return model.eval()
