"""Reading a GGUF file (llama.cpp's format) as Hugging Face-named tensors, config and tokenizer.

A GGUF holds everything in one file: the shapes as metadata under llama.cpp's key names, the
tokenizer as metadata arrays, and the weights as (usually quantized) blocks under names such as
`blk.0.attn_q.weight`. Tensors are dequantized with the `gguf` package to float32 and cast once to
the requested dtype, so each value is rounded only once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGUFReader, Keys
from transformers import PreTrainedTokenizerFast

from models.tokenizer import tokenizer_from_gguf_metadata

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFArchitecture:
    """How one GGUF `general.architecture` maps onto a Hugging Face model type."""

    model_type: str
    hf_class: str
    # llama.cpp's converter reorders the q and k rows of Llama models so that each rotary pair of
    # dimensions is adjacent (its rope kernel rotates interleaved pairs); Qwen2 keeps HF's order.
    rotary_rows_interleaved: bool


# Mistral GGUFs use the "llama" architecture: same tensors, same q/k reordering.
GGUF_ARCHITECTURES = {
    "llama": GGUFArchitecture("llama", "LlamaForCausalLM", rotary_rows_interleaved=True),
    "qwen2": GGUFArchitecture("qwen2", "Qwen2ForCausalLM", rotary_rows_interleaved=False),
}

# Hugging Face names of every tensor a supported decoder may hold; which are required depends on
# the config and is checked by the caller. `{layer}` is the block index.
HF_GLOBAL_TENSORS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
HF_LAYER_TENSORS = tuple(
    f"model.layers.{{layer}}.{module}.{kind}"
    for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    for kind in ("weight", "bias")
) + tuple(
    f"model.layers.{{layer}}.{module}.weight"
    for module in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    + ("input_layernorm", "post_attention_layernorm")
)

EMBEDDING_TENSOR = "token_embd.weight"
OUTPUT_TENSOR = "output.weight"
# Qwen2's q/k/v biases; present in every block or in none.
QUERY_BIAS_TENSOR = "blk.0.attn_q.bias"
# Llama 3.1's frequency-dependent rope scaling, which llama.cpp stores as this tensor.
ROPE_FREQUENCIES_TENSOR = "rope_freqs.weight"
# What llama.cpp assumes when a file omits `{arch}.rope.freq_base`.
DEFAULT_ROPE_THETA = 10000.0


class GGUFError(ValueError):
    """A GGUF file is unreadable or describes a model we cannot run; the message names the file."""


@dataclass(frozen=True, eq=False)
class GGUFModel:
    """Everything read from one GGUF file, in Hugging Face conventions."""

    hf_config: dict[str, Any]  # a `config.json` dictionary
    generation_config: dict[str, Any]  # a `generation_config.json` dictionary
    state_dict: dict[str, torch.Tensor]  # HF names, requested dtype, CPU
    tokenizer: PreTrainedTokenizerFast


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a file that starts with the GGUF magic bytes."""
    if not path.is_file():
        return False
    with path.open("rb") as file:
        return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def read_gguf(path: Path, dtype: torch.dtype) -> GGUFModel:
    """Read a GGUF file, dequantizing every tensor to `dtype`."""
    reader = _open_reader(path)
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    architecture = _architecture(metadata, path)
    tensor_shapes = {tensor.name: _torch_shape(tensor) for tensor in reader.tensors}

    hf_config = _hf_config(metadata, tensor_shapes, path)
    # The tokenizer first: it takes a second, dequantizing takes up to a minute.
    try:
        tokenizer = tokenizer_from_gguf_metadata(metadata, hf_config["model_type"], path)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise GGUFError(f"{path}: the tokenizer metadata cannot be used: {exc}") from exc
    state_dict = _read_tensors(reader, hf_config, GGUF_ARCHITECTURES[architecture], dtype, path)
    return GGUFModel(hf_config, _generation_config(metadata), state_dict, tokenizer)


def _open_reader(path: Path) -> GGUFReader:
    if not is_gguf_file(path):
        raise GGUFError(
            f"{path}: not a GGUF file (it does not start with the bytes {GGUF_MAGIC!r})"
        )
    try:
        return GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        raise GGUFError(
            f"{path}: the GGUF file is truncated or corrupt ({path.stat().st_size} bytes; "
            f"reading it failed with: {exc}); download or assemble it again"
        ) from exc


def _architecture(metadata: Mapping[str, Any], path: Path) -> str:
    architecture = metadata.get(Keys.General.ARCHITECTURE)
    if architecture not in GGUF_ARCHITECTURES:
        raise GGUFError(
            f"{path}: GGUF architecture {architecture!r} is not supported; "
            f"supported: {', '.join(GGUF_ARCHITECTURES)}"
        )
    return architecture


def _torch_shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    # GGUF lists dimensions fastest-varying first; torch lists them slowest first.
    return tuple(int(dim) for dim in reversed(tensor.shape))


def _hf_config(
    metadata: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], path: Path
) -> dict[str, Any]:
    """A Hugging Face `config.json` dictionary equivalent to the GGUF metadata."""
    arch_name = metadata[Keys.General.ARCHITECTURE]
    architecture = GGUF_ARCHITECTURES[arch_name]
    _reject_rope_scaling(metadata, tensor_shapes, arch_name, path)

    def required(key: str) -> Any:
        name = key.format(arch=arch_name)
        if name not in metadata:
            raise GGUFError(f"{path}: the GGUF metadata lacks {name!r}")
        return metadata[name]

    def optional(key: str, default: Any) -> Any:
        return metadata.get(key.format(arch=arch_name), default)

    if EMBEDDING_TENSOR not in tensor_shapes:
        raise GGUFError(f"{path}: the GGUF file has no {EMBEDDING_TENSOR!r} tensor")
    num_heads = int(required(Keys.Attention.HEAD_COUNT))
    hidden_size = int(required(Keys.LLM.EMBEDDING_LENGTH))
    return {
        "architectures": [architecture.hf_class],
        "model_type": architecture.model_type,
        # The embedding rows, not the token list: tables may be padded past the vocabulary.
        "vocab_size": tensor_shapes[EMBEDDING_TENSOR][0],
        "hidden_size": hidden_size,
        "intermediate_size": int(required(Keys.LLM.FEED_FORWARD_LENGTH)),
        "num_hidden_layers": int(required(Keys.LLM.BLOCK_COUNT)),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(optional(Keys.Attention.HEAD_COUNT_KV, num_heads)),
        "head_dim": int(optional(Keys.Attention.KEY_LENGTH, hidden_size // num_heads)),
        "rms_norm_eps": _shortest_float(required(Keys.Attention.LAYERNORM_RMS_EPS)),
        "rope_theta": _shortest_float(optional(Keys.Rope.FREQ_BASE, DEFAULT_ROPE_THETA)),
        "max_position_embeddings": int(required(Keys.LLM.CONTEXT_LENGTH)),
        # llama.cpp writes an output projection only when it is not the embedding matrix.
        "tie_word_embeddings": OUTPUT_TENSOR not in tensor_shapes,
        "attention_bias": QUERY_BIAS_TENSOR in tensor_shapes,
        "bos_token_id": metadata.get(Keys.Tokenizer.BOS_ID),
        "eos_token_id": metadata.get(Keys.Tokenizer.EOS_ID),
        "pad_token_id": metadata.get(Keys.Tokenizer.PAD_ID),
    }


def _shortest_float(value: float) -> float:
    """The shortest decimal that rounds to the same float32: GGUF stores 1e-6 as 9.99999997e-07."""
    return float(str(np.float32(value)))  # numpy prints a float32 with the fewest digits


def _reject_rope_scaling(
    metadata: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], arch: str, path: Path
) -> None:
    scaling = metadata.get(Keys.Rope.SCALING_TYPE.format(arch=arch), "none")
    if scaling != "none" or ROPE_FREQUENCIES_TENSOR in tensor_shapes:
        found = scaling if scaling != "none" else f"llama3 ({ROPE_FREQUENCIES_TENSOR})"
        raise GGUFError(
            f"{path}: rope scaling {found!r} in a GGUF file is not supported; "
            "load the model from its Hugging Face directory instead"
        )


def _generation_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The end tokens llama.cpp stops on: eos, and the end-of-turn / end-of-message tokens."""
    end_keys = (Keys.Tokenizer.EOS_ID, Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID)
    end_ids = [int(metadata[key]) for key in end_keys if key in metadata]
    generation_config: dict[str, Any] = {"eos_token_id": sorted(set(end_ids))}
    if Keys.Tokenizer.BOS_ID in metadata:
        generation_config["bos_token_id"] = int(metadata[Keys.Tokenizer.BOS_ID])
    if Keys.Tokenizer.PAD_ID in metadata:
        generation_config["pad_token_id"] = int(metadata[Keys.Tokenizer.PAD_ID])
    return generation_config


def _read_tensors(
    reader: GGUFReader,
    hf_config: Mapping[str, Any],
    architecture: GGUFArchitecture,
    dtype: torch.dtype,
    path: Path,
) -> dict[str, torch.Tensor]:
    """Dequantize every tensor to `dtype`, under its Hugging Face name."""
    hf_names = _hf_names_by_gguf_name(architecture, int(hf_config["num_hidden_layers"]))
    rotary_heads = {
        ".self_attn.q_proj.": int(hf_config["num_attention_heads"]),
        ".self_attn.k_proj.": int(hf_config["num_key_value_heads"]),
    }

    start_s = time.perf_counter()
    state_dict: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        hf_name = hf_names.get(tensor.name)
        if hf_name is None:
            raise GGUFError(
                f"{path}: unexpected tensor {tensor.name!r}: not part of a "
                f"{architecture.model_type} decoder this runtime can run"
            )
        weight = _dequantize(tensor, dtype, path)
        num_heads = next((n for part, n in rotary_heads.items() if part in hf_name), None)
        if architecture.rotary_rows_interleaved and num_heads is not None:
            weight = _undo_rotary_interleave(weight, num_heads)
        state_dict[hf_name] = weight
    logger.info(
        "dequantized %d tensors of %s to %s in %.1f s",
        len(state_dict),
        path.name,
        dtype,
        time.perf_counter() - start_s,
    )
    return state_dict


def _hf_names_by_gguf_name(architecture: GGUFArchitecture, num_layers: int) -> dict[str, str]:
    """`{gguf_name: hf_name}` from gguf's own table of tensor names per architecture."""
    gguf_arch = next(
        arch for arch, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture.model_type
    )
    name_map = gguf.get_tensor_name_map(gguf_arch, num_layers)
    hf_names = list(HF_GLOBAL_TENSORS) + [
        template.format(layer=layer) for layer in range(num_layers) for template in HF_LAYER_TENSORS
    ]
    by_gguf_name = {}
    for hf_name in hf_names:
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is not None:
            by_gguf_name[gguf_name] = hf_name
    return by_gguf_name


def _dequantize(tensor: gguf.ReaderTensor, dtype: torch.dtype, path: Path) -> torch.Tensor:
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # float32, torch order
    except (NotImplementedError, ValueError) as exc:
        raise GGUFError(
            f"{path}: tensor {tensor.name!r} of type {tensor.tensor_type.name} cannot be "
            f"dequantized: {exc}"
        ) from exc
    if not values.flags.writeable:  # an unquantized tensor is a view into the read-only file map
        values = np.array(values)
    return torch.from_numpy(values).to(dtype)


def _undo_rotary_interleave(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Restore Hugging Face's row order of a q or k projection (weight or bias).

    HF rotates dimension i of a head together with dimension i + head_dim/2; llama.cpp's converter
    reorders each head's rows so that those pairs sit side by side (rows 2i and 2i+1).

    weight: [num_heads * head_dim, ...] in llama.cpp's order; returns the same shape in HF's order.
    """
    head_dim = weight.shape[0] // num_heads
    pairs = weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])  # [H, D/2, 2, ...]
    return pairs.transpose(1, 2).reshape(weight.shape)  # [H, 2, D/2, ...] -> [H * D, ...]
