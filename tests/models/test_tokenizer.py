"""Tokenizers: GGUF rebuilding, draft/target compatibility, end-of-generation tokens."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf
import pytest
import torch
from tokenizers import AddedToken

from models.checkpoint import Checkpoint, load_checkpoint
from models.tokenizer import (
    IncompatibleTokenizerError,
    check_compatible,
    eos_token_ids,
    tokenizer_from_gguf_metadata,
)
from tests.conftest import (
    TINY_CORPUS,
    TINY_SPECIAL_TOKENS,
    make_tiny_hf_checkpoint,
    make_tiny_tokenizer,
    write_tiny_gguf,
)

UNICODE_TEXTS = ("plain ascii", "naïve café déjà vu", "emoji 😀🚀 and 東京", "tabs\tand\nnewlines")
# Qwen2.5 ids of tokens the engine relies on.
QWEN_END_OF_TEXT_ID = 151643
QWEN_IM_END_ID = 151645
QWEN_FIM_PREFIX_ID = 151659
QWEN_TOOL_CALL_ID = 151657


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_tiny_tokenizer_round_trips_any_text(text: str) -> None:
    tokenizer = make_tiny_tokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_tiny_tokenizer_is_deterministic_and_renders_chat() -> None:
    tokenizer = make_tiny_tokenizer()
    assert tokenizer.get_vocab() == make_tiny_tokenizer().get_vocab()

    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )

    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<|im_end|>")) == ["<|im_end|>"]


# Compatibility of a draft and a target.


def test_same_tokenizer_with_padded_embedding_is_compatible(tmp_path: Path) -> None:
    draft = load_checkpoint(make_tiny_hf_checkpoint(tmp_path, "qwen2"))
    target = load_checkpoint(make_tiny_hf_checkpoint(tmp_path, "qwen2", vocab_size=512, seed=1))
    assert draft.config.vocab_size != target.config.vocab_size

    check_compatible(draft.tokenizer, target.tokenizer, draft.name, target.name)


def test_gguf_and_directory_tokenizers_of_one_model_are_compatible(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    gguf_tokenizer = load_checkpoint(write_tiny_gguf(model_dir, tmp_path / "tiny.gguf")).tokenizer

    check_compatible(load_checkpoint(model_dir).tokenizer, gguf_tokenizer, "dir", "gguf")


def test_different_vocabularies_are_incompatible() -> None:
    draft = make_tiny_tokenizer()
    target = make_tiny_tokenizer(corpus=tuple(reversed(TINY_CORPUS)) + ("zzz zzz zzz",))

    with pytest.raises(IncompatibleTokenizerError) as error:
        check_compatible(draft, target, "tiny-draft", "tiny-target")

    message = str(error.value)
    assert "'tiny-draft'" in message and "'tiny-target'" in message
    assert "in the draft but" in message


def test_special_token_missing_from_one_side_is_incompatible() -> None:
    draft = make_tiny_tokenizer()
    target = make_tiny_tokenizer()
    target.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>"]})

    with pytest.raises(IncompatibleTokenizerError, match="'<\\|fim_prefix\\|>'.*missing"):
        check_compatible(draft, target, "draft", "target")


# End-of-generation tokens.


def test_eos_ids_union_tokenizer_generation_config_and_end_of_turn_tokens() -> None:
    tokenizer = make_tiny_tokenizer()
    end_of_text, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])

    assert eos_token_ids(tokenizer, None) == {end_of_text, im_end}
    assert eos_token_ids(tokenizer, {"eos_token_id": 7}) == {end_of_text, im_end, 7}
    assert eos_token_ids(tokenizer, {"eos_token_id": [7, 9]}) == {end_of_text, im_end, 7, 9}


def test_checkpoint_eos_ids_come_from_its_generation_config(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_tiny_hf_checkpoint(tmp_path, "llama"))
    extra = dataclasses.replace(checkpoint, generation_config={"eos_token_id": [5]})
    assert extra.eos_token_ids == checkpoint.eos_token_ids | {5}


# Rebuilding from GGUF metadata.


def tiny_gguf_metadata(tokens: list[str], token_types: list[int]) -> dict[str, object]:
    """GGUF `tokenizer.*` metadata: the tiny tokenizer's merges over `tokens`."""
    base = make_tiny_tokenizer()
    merges = json.loads(base.backend_tokenizer.to_str())["model"]["merges"]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": token_types,
        "tokenizer.ggml.merges": [" ".join(pair) for pair in merges],
        "tokenizer.ggml.eos_token_id": tokens.index("<|im_end|>"),
        "tokenizer.chat_template": base.chat_template,
    }


def test_gguf_control_and_user_defined_tokens_stay_whole() -> None:
    base = make_tiny_tokenizer()
    vocab = base.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__) + ["<tool_call>", "<|fim_prefix|>"]
    token_types = [
        gguf.TokenType.CONTROL if token in TINY_SPECIAL_TOKENS else gguf.TokenType.NORMAL
        for token in tokens[:-2]
    ] + [gguf.TokenType.USER_DEFINED, gguf.TokenType.CONTROL]

    tokenizer = tokenizer_from_gguf_metadata(
        tiny_gguf_metadata(tokens, token_types), "qwen2", Path("test.gguf")
    )

    tool_call_id, fim_prefix_id = len(tokens) - 2, len(tokens) - 1
    assert tokenizer.encode("<tool_call>x") == [tool_call_id, *base.encode("x")]
    assert tokenizer.encode("<|fim_prefix|>") == [fim_prefix_id]
    assert tokenizer.decode([fim_prefix_id], skip_special_tokens=True) == ""
    assert tokenizer.decode([tool_call_id], skip_special_tokens=True) == "<tool_call>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.chat_template == base.chat_template
    assert isinstance(tokenizer.added_tokens_decoder[tool_call_id], AddedToken)


# The real packaged models (skipped with the reason when they are not installed).


@pytest.mark.real
def test_packaged_tokenizers_are_compatible_and_chat(
    draft_checkpoint: Checkpoint, target_checkpoint: Checkpoint
) -> None:
    check_compatible(
        draft_checkpoint.tokenizer,
        target_checkpoint.tokenizer,
        draft_checkpoint.name,
        target_checkpoint.name,
    )
    for checkpoint in (draft_checkpoint, target_checkpoint):
        tokenizer = checkpoint.tokenizer
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Write hello world in C."}],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert "<|im_start|>user\nWrite hello world in C.<|im_end|>\n" in rendered
        assert rendered.endswith("<|im_start|>assistant\n")
        assert {QWEN_IM_END_ID, QWEN_END_OF_TEXT_ID} <= checkpoint.eos_token_ids
        assert tokenizer.encode("<|fim_prefix|>") == [QWEN_FIM_PREFIX_ID]
        assert tokenizer.encode("<tool_call>") == [QWEN_TOOL_CALL_ID]
        for text in UNICODE_TEXTS:
            assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.real
def test_packaged_embeddings_cover_the_tokenizer(
    draft_checkpoint: Checkpoint, target_checkpoint: Checkpoint
) -> None:
    for checkpoint in (draft_checkpoint, target_checkpoint):
        rows = checkpoint.state_dict["model.embed_tokens.weight"].shape[0]
        assert rows == checkpoint.config.vocab_size == 151936
        assert checkpoint.state_dict["lm_head.weight"].dtype == torch.bfloat16
