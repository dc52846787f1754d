"""Build an engine from model names or paths: load, check the pair, place on the device."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from models.checkpoint import Checkpoint, load_checkpoint
from models.tokenizer import check_compatible
from models.transformer import Transformer, build_model
from server.engine.engine import LLMEngine
from server.engine.params import EngineConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPair:
    """The models behind an engine, kept for routing (the small tier reuses the draft)."""

    target_name: str
    draft_name: str | None
    target: Transformer
    draft: Transformer | None
    tokenizer: object
    eos_token_ids: frozenset[int]
    load_s: float


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device) -> Transformer:
    return build_model(checkpoint.config, checkpoint.state_dict, dtype, device)


def load_pair(
    target: str, draft: str | None, dtype: torch.dtype, device: torch.device
) -> LoadedPair:
    """Load the target and (optionally) the draft; refuse a pair whose tokenizers differ."""
    started = time.perf_counter()
    target_ckpt = load_checkpoint(target, dtype)
    target_model = load_model(target_ckpt, dtype, device)
    tokenizer = target_ckpt.tokenizer
    eos = target_ckpt.eos_token_ids
    target_name = target_ckpt.name
    del target_ckpt  # drop the loaded tensors before reading the next model

    draft_model, draft_name = None, None
    if draft is not None:
        draft_ckpt = load_checkpoint(draft, dtype)
        check_compatible(draft_ckpt.tokenizer, tokenizer, draft_ckpt.name, target_name)
        draft_model = load_model(draft_ckpt, dtype, device)
        draft_name = draft_ckpt.name
        del draft_ckpt
    return LoadedPair(
        target_name=target_name,
        draft_name=draft_name,
        target=target_model,
        draft=draft_model,
        tokenizer=tokenizer,
        eos_token_ids=frozenset(eos),
        load_s=time.perf_counter() - started,
    )


def build_engine(pair: LoadedPair, config: EngineConfig) -> LLMEngine:
    return LLMEngine(pair.target, pair.tokenizer, pair.eos_token_ids, config, draft=pair.draft)
