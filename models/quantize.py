"""Weight-only int8 quantization of a model's linear layers, for a cheaper draft on the CPU.

A decode step of a small model is bound by reading its weights; storing them as int8 with one
scale per output channel halves the bytes read, and torch's packed CPU kernel
(`aten._weight_int8pack_mm`) multiplies without materialising a dequantized copy. Activations,
norms, the embedding and the KV cache stay in the model's dtype. Only the draft is meant to be
quantized: the target verifies every token, so outputs do not change, only acceptance may.
"""

from __future__ import annotations

import torch
from torch import nn

from models.transformer import Transformer

INT8_MAX = 127  # symmetric range [-127, 127], so that negating a weight never overflows


class Int8Linear(nn.Module):
    """y = x @ (w_int8 * scale).T + bias, with per-output-channel symmetric scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # [out, in]
        # The smallest positive normal float32 keeps all-zero rows from dividing by zero.
        scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / INT8_MAX
        quantized = (weight / scales[:, None]).round().clamp(-INT8_MAX, INT8_MAX)
        self.register_buffer("weight_int8", quantized.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.to(linear.weight.dtype))
        self.bias = linear.bias
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # [rows, in]
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def quantize_int8(model: Transformer) -> Transformer:
    """Replace every projection and the vocabulary head by int8 weights, in place (CPU only)."""
    if model.embed_tokens.weight.device.type != "cpu":
        raise ValueError("int8 draft quantization uses torch's CPU kernel; run it on the CPU")
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.qkv_proj = Int8Linear(attn.qkv_proj)
        attn.o_proj = Int8Linear(attn.o_proj)
        mlp.gate_up_proj = Int8Linear(mlp.gate_up_proj)
        mlp.down_proj = Int8Linear(mlp.down_proj)
    model.lm_head = Int8Linear(model.lm_head)
    return model
