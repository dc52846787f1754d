"""One entry point for model weights: a Hugging Face directory, a GGUF file or a packaged model.

Whatever the source, `load_checkpoint` returns the same thing: Hugging Face tensor names
(`model.layers.{i}.self_attn.q_proj.weight`, ...) in the requested dtype on the CPU, a
`ModelConfig`, and a transformers tokenizer. Dimension names: V vocabulary (embedding rows),
E hidden size, I intermediate size, H / Hkv query / key-value heads, D head size.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from models.config import ModelConfig
from models.gguf_checkpoint import GGUFError, GGUFModel, is_gguf_file, read_gguf
from models.packaged import (
    DEFAULT_DRAFT,
    DEFAULT_TARGET,
    PACKAGED_MODELS,
    PackagedModel,
    PackagedModelError,
    assembled_gguf,
    converted_directory,
    default_cache_dir,
    is_complete,
    packaged_available,
    staging_directory,
)
from models.tokenizer import TokenizerError, eos_token_ids, load_tokenizer

__all__ = [
    "DEFAULT_DRAFT",
    "DEFAULT_TARGET",
    "PACKAGED_MODELS",
    "Checkpoint",
    "CheckpointError",
    "expected_tensor_shapes",
    "load_checkpoint",
    "load_hf_directory",
    "packaged_available",
    "write_hf_directory",
]

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Tensors some checkpoints carry that the model recomputes: old Llama saves held the rope table.
IGNORED_TENSOR_SUFFIXES = (".rotary_emb.inv_freq",)
# `org/name`, the shape of a Hugging Face Hub model id.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# How many names an error message lists before summarising the rest as a count.
MAX_LISTED_NAMES = 5


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file or directory and the problem."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A model's weights, shapes and tokenizer, ready to build a model from."""

    name: str  # display name: the packaged name, or the directory or file name
    source: Path  # the directory or file the tensors were read from
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]  # Hugging Face names, requested dtype, CPU
    tokenizer: PreTrainedTokenizerBase  # carries the chat template when the source has one
    generation_config: Mapping[str, Any] = field(default_factory=dict)  # HF generation_config.json

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every token id that ends generation for this model."""
        return eos_token_ids(self.tokenizer, self.generation_config)


def load_checkpoint(
    name_or_path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    *,
    cache_dir: Path | None = None,
) -> Checkpoint:
    """Load a model from a local directory, a GGUF file or a packaged model name; no network.

    Tried in order: (1) an existing directory holding `config.json`, `*.safetensors` (sharded or
    not) and tokenizer files; (2) an existing GGUF file; (3) a name in `PACKAGED_MODELS`, assembled
    from its pip packages and dequantized once into `cache_dir` (default: `default_cache_dir()`).
    Raises `CheckpointError` naming the file or directory and the problem.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    path = Path(name_or_path).expanduser()
    try:
        if path.is_dir():
            return load_hf_directory(path, dtype)
        if path.is_file():
            return _load_gguf_file(path, dtype)
        if str(name_or_path) in PACKAGED_MODELS:
            model = PACKAGED_MODELS[str(name_or_path)]
            return _load_packaged(model, dtype, cache_dir or default_cache_dir())
    except (GGUFError, PackagedModelError, TokenizerError) as exc:
        raise CheckpointError(str(exc)) from exc
    except OSError as exc:  # unreadable files, a full disk while writing the cache
        raise CheckpointError(f"{name_or_path}: {exc}") from exc
    raise CheckpointError(_not_found_message(str(name_or_path)))


def _not_found_message(name: str) -> str:
    packaged = ", ".join(PACKAGED_MODELS)
    if HUB_ID.fullmatch(name):
        return (
            f"no such file or directory: {name}. It looks like a Hugging Face Hub id, but models "
            "are never downloaded here (no network or hub access): pass a local model directory, "
            f"a GGUF file, or a packaged model name ({packaged})"
        )
    return f"no such file or directory: {name} (packaged model names: {packaged})"


def load_hf_directory(directory: Path, dtype: torch.dtype, name: str | None = None) -> Checkpoint:
    """Load a Hugging Face model directory: config.json, safetensors weights and tokenizer."""
    start_s = time.perf_counter()
    display_name = name or directory.resolve().name
    hf_config = _read_json(directory / CONFIG_FILE)
    config = _model_config(hf_config, display_name, directory / CONFIG_FILE)

    state_dict = _read_safetensors(_weight_files(directory), dtype)
    state_dict = _checked_state_dict(state_dict, config, directory)
    tokenizer = load_tokenizer(directory)
    _check_tokenizer_fits(tokenizer, config, directory)

    generation_file = directory / GENERATION_CONFIG_FILE
    generation_config = _read_json(generation_file) if generation_file.is_file() else {}
    logger.info(
        "loaded %s from %s (%d tensors, %s) in %.1f s",
        display_name,
        directory,
        len(state_dict),
        dtype,
        time.perf_counter() - start_s,
    )
    return Checkpoint(display_name, directory, config, state_dict, tokenizer, generation_config)


def _load_gguf_file(path: Path, dtype: torch.dtype) -> Checkpoint:
    if path.suffix != ".gguf" and not is_gguf_file(path):
        raise CheckpointError(
            f"{path}: not a checkpoint this server reads; pass a GGUF file, or the directory "
            "holding config.json, *.safetensors and the tokenizer files"
        )
    return _checkpoint_from_gguf(read_gguf(path, dtype), path.name, path)


def _checkpoint_from_gguf(model: GGUFModel, name: str, path: Path) -> Checkpoint:
    config = _model_config(model.hf_config, name, path)
    state_dict = _checked_state_dict(model.state_dict, config, path)
    _check_tokenizer_fits(model.tokenizer, config, path)
    return Checkpoint(name, path, config, state_dict, model.tokenizer, model.generation_config)


def _load_packaged(model: PackagedModel, dtype: torch.dtype, cache_dir: Path) -> Checkpoint:
    """Load from the converted cache, creating it from the packaged GGUF file on first use."""
    directory = converted_directory(model, cache_dir, dtype)
    if not is_complete(directory):
        _convert_packaged(model, dtype, cache_dir, directory)
    checkpoint = load_hf_directory(directory, dtype, name=model.name)
    if not checkpoint.tokenizer.chat_template:
        raise CheckpointError(f"{directory}: packaged model {model.name!r} has no chat template")
    return checkpoint


def _convert_packaged(
    model: PackagedModel, dtype: torch.dtype, cache_dir: Path, directory: Path
) -> None:
    # Dequantizing a 1.5B GGUF takes tens of seconds with gguf's numpy code; reading the result back
    # from a safetensors file takes a few. The GGUF contents are dropped on return, before the
    # caller reads the directory back, so the two copies never coexist.
    logger.info(
        "first use of %s in %s: dequantizing it once into %s; later loads read that directory",
        model.name,
        dtype,
        directory,
    )
    gguf_path = assembled_gguf(model, cache_dir)
    contents = read_gguf(gguf_path, dtype)
    _checkpoint_from_gguf(contents, model.name, gguf_path)  # validate before caching
    start_s = time.perf_counter()
    with staging_directory(directory) as staging:
        write_hf_directory(staging, contents)
    logger.info("cached %s as %s in %.1f s", model.name, directory, time.perf_counter() - start_s)


def write_hf_directory(directory: Path, model: GGUFModel) -> None:
    """Save GGUF contents as a Hugging Face directory that `load_hf_directory` reads back."""
    save_file(model.state_dict, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    # transformers reads a config.json without a version as an old save and, on loading the
    # tokenizer beside it, warns about a Mistral tokenizer bug that does not apply here.
    hf_config = {**model.hf_config, "transformers_version": transformers.__version__}
    (directory / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2))
    (directory / GENERATION_CONFIG_FILE).write_text(json.dumps(model.generation_config, indent=2))
    model.tokenizer.save_pretrained(directory)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {path.name}; a model directory needs one")
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(content).__name__}")
    return content


def _model_config(hf_config: dict[str, Any], name: str, source: Path) -> ModelConfig:
    try:
        return ModelConfig.from_hf_dict(hf_config, name=name)
    except KeyError as exc:
        raise CheckpointError(f"{source}: the model config lacks {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a directory: those its index names, or else every one there."""
    index_path = directory / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no 'weight_map' object")
        files = [directory / file_name for file_name in sorted(set(weight_map.values()))]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise CheckpointError(
                f"{directory}: shards listed in {index_path.name} are missing: {missing}"
            )
        return files

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        others = sorted(file.name for file in directory.glob("*.bin")) + sorted(
            file.name for file in directory.glob("*.pt*")
        )
        hint = f" (found {others}: only safetensors weights are read)" if others else ""
        raise CheckpointError(f"{directory}: no *.safetensors weight files{hint}")
    return files


def _read_safetensors(files: list[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:
                for name in weights.keys():
                    if name in state_dict:
                        raise CheckpointError(f"{file}: tensor {name!r} is also in another shard")
                    state_dict[name] = weights.get_tensor(name).to(dtype)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file: {exc}") from exc
    return state_dict


def expected_tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this config holds, by Hugging Face name, with its shape."""
    hidden, vocab, intermediate = config.hidden_size, config.vocab_size, config.intermediate_size
    q_rows = config.num_heads * config.head_dim  # H * D
    kv_rows = config.num_kv_heads * config.head_dim  # Hkv * D
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),  # [V, E]
        "model.norm.weight": (hidden,),
    }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, hidden)  # [V, E]
    for layer in range(config.num_layers):
        prefix = f"model.layers.{layer}."
        shapes[prefix + "self_attn.q_proj.weight"] = (q_rows, hidden)
        shapes[prefix + "self_attn.k_proj.weight"] = (kv_rows, hidden)
        shapes[prefix + "self_attn.v_proj.weight"] = (kv_rows, hidden)
        shapes[prefix + "self_attn.o_proj.weight"] = (hidden, q_rows)
        if config.attention_bias:
            shapes[prefix + "self_attn.q_proj.bias"] = (q_rows,)
            shapes[prefix + "self_attn.k_proj.bias"] = (kv_rows,)
            shapes[prefix + "self_attn.v_proj.bias"] = (kv_rows,)
            # Llama's `attention_bias` covers the output projection too; Qwen2 biases q, k, v only.
            if config.architecture != "qwen2":
                shapes[prefix + "self_attn.o_proj.bias"] = (hidden,)
        shapes[prefix + "mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[prefix + "mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[prefix + "mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[prefix + "input_layernorm.weight"] = (hidden,)
        shapes[prefix + "post_attention_layernorm.weight"] = (hidden,)
    return shapes


def _checked_state_dict(
    state_dict: dict[str, torch.Tensor], config: ModelConfig, source: Path
) -> dict[str, torch.Tensor]:
    """Drop recomputed tensors and a tied head; raise unless names and shapes match the config."""
    tensors = {
        name: tensor
        for name, tensor in state_dict.items()
        if not name.endswith(IGNORED_TENSOR_SUFFIXES)
    }
    if config.tie_word_embeddings and tensors.pop("lm_head.weight", None) is not None:
        logger.debug("%s: dropped lm_head.weight, tied to the embedding", source)

    expected = expected_tensor_shapes(config)
    missing = sorted(expected.keys() - tensors.keys())
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} tensors the config requires are missing: {_listed(missing)}"
        )
    unexpected = sorted(tensors.keys() - expected.keys())
    if unexpected:
        raise CheckpointError(
            f"{source}: {len(unexpected)} tensors are not part of a {config.architecture} model "
            f"as configured: {_listed(unexpected)}"
        )
    wrong_shapes = [
        f"{name} is {tuple(tensors[name].shape)}, expected {shape}"
        for name, shape in expected.items()
        if tuple(tensors[name].shape) != shape
    ]
    if wrong_shapes:
        raise CheckpointError(
            f"{source}: tensor shapes do not match the config: {_listed(wrong_shapes)}"
        )
    return tensors


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    hidden = len(names) - MAX_LISTED_NAMES
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _check_tokenizer_fits(
    tokenizer: PreTrainedTokenizerBase, config: ModelConfig, source: Path
) -> None:
    """Every token id must index a row of the embedding (which may have spare padding rows)."""
    largest_id = max(tokenizer.get_vocab().values(), default=-1)
    if largest_id >= config.vocab_size:
        raise CheckpointError(
            f"{source}: the tokenizer has token ids up to {largest_id}, but the embedding has only "
            f"{config.vocab_size} rows; the tokenizer does not belong to these weights"
        )
