"""Tiny random models in float32 for tests: transformers' reference and ours, same weights."""

from __future__ import annotations

import torch
import transformers

from models.config import ModelConfig
from models.transformer import Transformer, build_model

HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
}


def tiny_hf_model(
    architecture: str = "qwen2", vocab_size: int = 97, seed: int = 0, **overrides
) -> transformers.PreTrainedModel:
    """A 2-layer random model (hidden 64, 4 query and 2 KV heads) from transformers."""
    config_cls, model_cls = HF_CLASSES[architecture]
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    if architecture == "mistral":
        kwargs["sliding_window"] = None
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return model_cls(config_cls(**kwargs)).float().eval()


def ours_from_hf(hf_model: transformers.PreTrainedModel) -> Transformer:
    """Our decoder with the same weights as `hf_model`, in float32 on the CPU."""
    config = ModelConfig.from_hf_dict(hf_model.config.to_dict())
    return build_model(config, hf_model.state_dict(), torch.float32, torch.device("cpu"))


def tiny_model(vocab_size: int, seed: int = 0, head_scale: float = 1.0) -> Transformer:
    """Our tiny decoder; `head_scale` sharpens its distributions (random heads are nearly flat)."""
    model = ours_from_hf(tiny_hf_model("qwen2", vocab_size=vocab_size, seed=seed))
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level tokenizer with one token per byte (ids 0-255) plus ChatML special tokens.

    Any UTF-8 text round-trips, and multi-byte characters span several tokens, which is what the
    streaming and stop-string tests need. Built offline with the `tokenizers` library.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    # Order the 256 byte symbols by the byte they stand for, so token id == byte value.
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(byte_chars)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the ByteLevel alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping
