"""Architecture of a Llama-family decoder, independent of where the weights come from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Architecture = Literal["llama", "qwen2", "mistral"]

# Hugging Face `architectures` / `model_type` values we can run, mapped to our family name.
SUPPORTED_MODEL_TYPES: dict[str, Architecture] = {
    "llama": "llama",
    "qwen2": "qwen2",
    "mistral": "mistral",
}


class UnsupportedModelError(ValueError):
    """The checkpoint describes an architecture this runtime does not implement."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent rope scaling (`rope_type == "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of one decoder-only transformer."""

    architecture: Architecture
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    # Qwen2 adds a bias to the q, k and v projections; Llama and Mistral do not.
    attention_bias: bool = False
    # Mistral's sliding window is not implemented; contexts longer than it are refused.
    sliding_window: int | None = None
    name: str = "model"

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_MODEL_TYPES.values():
            raise UnsupportedModelError(f"unsupported architecture {self.architecture!r}")
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "head_dim"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.num_heads <= 0 or self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a positive multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def max_context(self) -> int:
        """Longest sequence (prompt plus output) the model may attend over."""
        if self.sliding_window is not None:
            return min(self.max_position_embeddings, self.sliding_window)
        return self.max_position_embeddings

    def with_name(self, name: str) -> ModelConfig:
        return dataclasses.replace(self, name=name)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], name: str = "model") -> ModelConfig:
        """Build from a Hugging Face `config.json` dictionary."""
        model_type = str(hf.get("model_type", ""))
        if model_type not in SUPPORTED_MODEL_TYPES:
            archs = hf.get("architectures") or []
            raise UnsupportedModelError(
                f"unsupported model_type {model_type!r} (architectures {archs}); "
                f"supported: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        arch = SUPPORTED_MODEL_TYPES[model_type]
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        head_dim = hf.get("head_dim") or hidden // num_heads
        rope_params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
        rope_theta = hf.get("rope_theta") or rope_params.get("rope_theta") or 10000.0
        scaling = None
        if rope_params.get("rope_type", rope_params.get("type")) == "llama3":
            scaling = RopeScaling(
                factor=float(rope_params["factor"]),
                low_freq_factor=float(rope_params["low_freq_factor"]),
                high_freq_factor=float(rope_params["high_freq_factor"]),
                original_max_position_embeddings=int(
                    rope_params["original_max_position_embeddings"]
                ),
            )
        window = (
            hf.get("sliding_window") if hf.get("use_sliding_window", arch == "mistral") else None
        )
        return cls(
            architecture=arch,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", arch == "qwen2")),
            sliding_window=int(window) if window else None,
            name=name,
        )
