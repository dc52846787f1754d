"""Tokenizers for checkpoints: loading them, checking a draft/target pair, finding end tokens.

Every tokenizer here is a transformers `PreTrainedTokenizerBase`, whether it was saved next to the
weights (`tokenizer.json`, `tokenizer_config.json`, ...) or rebuilt from a GGUF file's metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gguf import TokenType
from tokenizers import AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.integrations.ggml import GGUF_TO_FAST_CONVERTERS, convert_gguf_tokenizer

logger = logging.getLogger(__name__)

# Any one of these is enough for `AutoTokenizer` to build a tokenizer from a directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")

# Special tokens that end a turn or a document in the model families we serve. A chat model stops
# on its end-of-turn token, while a base model (or a chat model that drifts out of the template)
# ends with an end-of-text token; llama.cpp stops on all of them for the same reason.
END_OF_TURN_TOKENS = (
    "<|im_end|>",  # ChatML: Qwen
    "<|endoftext|>",  # Qwen, GPT-2 style BPE vocabularies
    "<|eot_id|>",  # Llama 3 end of turn
    "<|eom_id|>",  # Llama 3 end of message (tool call)
    "<|end_of_text|>",  # Llama 3 end of document
    "</s>",  # Llama 2, Mistral
)

# GGUF `tokenizer.ggml.model` values we can rebuild: byte-level BPE ("gpt2", used by Qwen and
# Llama 3) and SentencePiece BPE ("llama", used by Llama 2 and Mistral).
GGUF_TOKENIZER_MODELS = ("gpt2", "llama")


class TokenizerError(ValueError):
    """A tokenizer could not be loaded or rebuilt; the message names the source."""


class IncompatibleTokenizerError(TokenizerError):
    """A draft and a target model do not share one token id space."""


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in a Hugging Face model directory, without touching the network."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerError(
            f"{directory}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer next to the weights with tokenizer.save_pretrained(directory)"
        )
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{directory}: the tokenizer cannot be loaded: {exc}") from exc


def tokenizer_from_gguf_metadata(
    metadata: Mapping[str, Any], architecture: str, source: Path
) -> PreTrainedTokenizerFast:
    """Rebuild a tokenizer from a GGUF file's `tokenizer.*` metadata.

    transformers' GGUF converters build the vocabulary, merges, pre-tokenizer and decoder; the
    special tokens, end/begin/pad roles and chat template are then set here from the metadata, since
    those converters register only a few hard-coded special tokens (Qwen's fill-in-the-middle and
    tool-call tokens would otherwise be split into pieces).
    """
    tokenizer_model = metadata.get("tokenizer.ggml.model")
    if tokenizer_model not in GGUF_TOKENIZER_MODELS or architecture not in GGUF_TO_FAST_CONVERTERS:
        raise TokenizerError(
            f"{source}: cannot rebuild a tokenizer of type {tokenizer_model!r} for architecture "
            f"{architecture!r}; supported tokenizer types: {', '.join(GGUF_TOKENIZER_MODELS)}"
        )
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    token_types: list[int] = list(metadata.get("tokenizer.ggml.token_type", []))

    backend, _ = convert_gguf_tokenizer(architecture, _converter_input(metadata, tokens))
    backend.add_special_tokens(
        _tokens_of_type(tokens, token_types, TokenType.CONTROL, special=True)
    )
    backend.add_tokens(_tokens_of_type(tokens, token_types, TokenType.USER_DEFINED, special=False))

    def token_at(key: str) -> str | None:
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[token_id] if token_id is not None and token_id < len(tokens) else None

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token_at("bos_token_id"),
        eos_token=token_at("eos_token_id"),
        pad_token=token_at("padding_token_id"),
        unk_token=token_at("unknown_token_id"),
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=metadata.get("tokenizer.chat_template"),
    )


def _converter_input(metadata: Mapping[str, Any], tokens: list[str]) -> dict[str, Any]:
    """The dictionary transformers' GGUF tokenizer converters read (their key names)."""
    converter_input: dict[str, Any] = {
        "tokenizer_type": metadata["tokenizer.ggml.model"],
        "tokens": tokens,
    }
    optional_keys = {
        "tokenizer.ggml.merges": "merges",
        "tokenizer.ggml.scores": "scores",
        "tokenizer.ggml.token_type": "token_type",
        "tokenizer.ggml.unknown_token_id": "unk_token_id",
        "tokenizer.ggml.add_space_prefix": "add_prefix_space",
    }
    for gguf_key, converter_key in optional_keys.items():
        if gguf_key in metadata:
            converter_input[converter_key] = metadata[gguf_key]
    return converter_input


def _tokens_of_type(
    tokens: list[str], token_types: list[int], wanted: TokenType, special: bool
) -> list[AddedToken]:
    return [
        AddedToken(token, special=special, normalized=False)
        for token, token_type in zip(tokens, token_types, strict=False)
        if token_type == wanted
    ]


def check_compatible(
    draft_tokenizer: PreTrainedTokenizerBase,
    target_tokenizer: PreTrainedTokenizerBase,
    draft_name: str,
    target_name: str,
) -> None:
    """Raise `IncompatibleTokenizerError` unless draft and target give every token the same id.

    Speculative decoding passes token ids, not text, between the two models, so every token both
    vocabularies know must have one id, no id may mean two tokens, and every special or added token
    of either side must exist with the same id in the other. Embedding sizes are not compared: a
    family pads its embedding tables to different sizes (151936 or 152064 rows for one Qwen2.5
    vocabulary). Which token plays eos or bos may differ (a base draft with an instruct target): the
    engine stops on the target's end tokens.
    """
    draft_vocab = draft_tokenizer.get_vocab()
    target_vocab = target_tokenizer.get_vocab()
    difference = _first_vocabulary_difference(draft_vocab, target_vocab)
    if difference is None:
        difference = _first_special_difference(draft_tokenizer, target_vocab, "draft", "target")
    if difference is None:
        difference = _first_special_difference(target_tokenizer, draft_vocab, "target", "draft")
    if difference is not None:
        raise IncompatibleTokenizerError(
            f"draft model {draft_name!r} and target model {target_name!r} have incompatible "
            f"tokenizers: {difference}. Speculative decoding needs one token id space: pick a "
            "draft model from the target's family (same tokenizer)"
        )
    logger.debug("tokenizers of %s and %s are compatible", draft_name, target_name)


def _first_vocabulary_difference(
    draft_vocab: Mapping[str, int], target_vocab: Mapping[str, int]
) -> str | None:
    """The lowest id that names two different tokens, or else the first token with two ids."""
    draft_by_id = {token_id: token for token, token_id in draft_vocab.items()}
    target_by_id = {token_id: token for token, token_id in target_vocab.items()}
    for token_id in sorted(draft_by_id.keys() & target_by_id.keys()):
        if draft_by_id[token_id] != target_by_id[token_id]:
            return (
                f"id {token_id} is {draft_by_id[token_id]!r} in the draft but "
                f"{target_by_id[token_id]!r} in the target"
            )
    for token in sorted(draft_vocab.keys() & target_vocab.keys(), key=draft_vocab.__getitem__):
        if draft_vocab[token] != target_vocab[token]:
            return (
                f"token {token!r} is id {draft_vocab[token]} in the draft but "
                f"id {target_vocab[token]} in the target"
            )
    return None


def _first_special_difference(
    tokenizer: PreTrainedTokenizerBase, other_vocab: Mapping[str, int], side: str, other_side: str
) -> str | None:
    """The first special or added token of `tokenizer` that `other_vocab` lacks or numbers apart."""
    for token, token_id in sorted(_special_tokens(tokenizer).items(), key=lambda item: item[1]):
        other_id = other_vocab.get(token)
        if other_id is None:
            return (
                f"{side} special token {token!r} (id {token_id}) is missing from the {other_side}"
            )
        if other_id != token_id:
            return (
                f"special token {token!r} is id {token_id} in the {side} "
                f"but id {other_id} in the {other_side}"
            )
    return None


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """`{token: id}` for the added tokens and the eos/bos/pad/unk tokens."""
    specials = {
        added.content: token_id for token_id, added in tokenizer.added_tokens_decoder.items()
    }
    for token in tokenizer.all_special_tokens:
        specials.setdefault(token, tokenizer.convert_tokens_to_ids(token))
    return specials


def eos_token_ids(
    tokenizer: PreTrainedTokenizerBase, hf_generation_config: Mapping[str, Any] | None
) -> frozenset[int]:
    """Every token id that ends generation.

    The union of the tokenizer's eos token, the `eos_token_id` (one id or a list) of a Hugging Face
    `generation_config.json` dictionary, and the special tokens among `END_OF_TURN_TOKENS`.
    """
    end_ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        end_ids.add(int(tokenizer.eos_token_id))

    configured = (hf_generation_config or {}).get("eos_token_id")
    if isinstance(configured, int):
        end_ids.add(configured)
    elif isinstance(configured, list):
        end_ids.update(int(token_id) for token_id in configured)

    special_ids = {
        added.content: token_id
        for token_id, added in tokenizer.added_tokens_decoder.items()
        if added.special
    }
    end_ids.update(special_ids[token] for token in END_OF_TURN_TOKENS if token in special_ids)
    return frozenset(end_ids)
