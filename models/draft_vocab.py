"""The tokens a trimmed draft head scores: the most frequent ones of a reference corpus.

A draft's vocabulary head ([V, hidden], 151,936 rows for Qwen2.5) costs as much to read per step
as several of its layers. Scoring only the tokens that actually occur in text cuts that cost; the
target still verifies every token, so outputs never change, and a token outside the list only
costs a rejected draft where the target picks it.

The corpus is the Python standard library's own source (code, comments and English docstrings),
which every installation has, so the list is rebuilt identically anywhere without shipping data.
Tokens are ranked by their count there, then the rest by id (byte-pair merge order, which follows
frequency in the tokenizer's own training data). Special tokens are always kept so the draft can
propose an end of turn. The ranking is cached per tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sysconfig
from collections import Counter
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Bump when the corpus or the ranking rule changes, so old caches are not reused.
RANKING_VERSION = 1
# Tokenize the corpus in chunks of this many files (bounded memory, same result).
FILES_PER_CHUNK = 64


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary (token -> id), identifying the tokenizer."""
    digest = hashlib.sha256()
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        digest.update(f"{token_id}\t{token}\n".encode())
    return digest.hexdigest()[:16]


def corpus_files() -> list[Path]:
    """The standard library's Python sources, tests excluded, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        path
        for path in root.rglob("*.py")
        if not {"test", "tests", "site-packages", "idlelib"} & set(path.parts)
    )


def rank_tokens(tokenizer: PreTrainedTokenizerBase, files: list[Path]) -> list[int]:
    """Every token id of the tokenizer, most frequent in `files` first, then by id."""
    counts: Counter[int] = Counter()
    for start in range(0, len(files), FILES_PER_CHUNK):
        texts = [p.read_text(errors="ignore") for p in files[start : start + FILES_PER_CHUNK]]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    seen = [token_id for token_id, _ in counts.most_common()]
    seen_set = set(seen)
    rest = [i for i in range(len(tokenizer)) if i not in seen_set]
    return seen + rest


def token_ranking(
    tokenizer: PreTrainedTokenizerBase, cache_dir: Path, corpus: list[Path] | None = None
) -> list[int]:
    """The ranking over `corpus` (default: the standard library), computed once and cached."""
    files = corpus_files() if corpus is None else corpus
    corpus_key = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in files).encode())
    name = f"draft-vocab-v{RANKING_VERSION}-{tokenizer_fingerprint(tokenizer)}"
    path = cache_dir / f"{name}-{corpus_key.hexdigest()[:12]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    logger.info("ranking draft-head tokens over %d corpus files (once)", len(files))
    ranking = rank_tokens(tokenizer, files)
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(ranking))
    temporary.replace(path)
    return ranking


def frequent_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    cache_dir: Path,
    vocab_size: int,
    corpus: list[Path] | None = None,
) -> torch.Tensor:
    """Sorted ids [<= count + specials] the trimmed head keeps; all < `vocab_size` (the head's)."""
    if count <= 0:
        raise ValueError(f"the draft head must keep at least one token, got {count}")
    keep = set(token_ranking(tokenizer, cache_dir, corpus)[:count])
    keep.update(tokenizer.all_special_ids)
    keep.update(tokenizer.added_tokens_decoder)
    return torch.tensor(sorted(i for i in keep if i < vocab_size), dtype=torch.long)
