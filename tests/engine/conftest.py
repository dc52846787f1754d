from __future__ import annotations

import pytest

from models.transformer import Transformer
from tests.engine.helpers import VOCAB_SIZE
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


# A target and a draft that agree often but not always; modules that need other models (sharper
# heads for distribution tests, say) define their own `target`.
@pytest.fixture(scope="module")
def target() -> Transformer:
    return tiny_model(VOCAB_SIZE, seed=0, head_scale=4.0)


@pytest.fixture(scope="module")
def draft() -> Transformer:
    return tiny_model(VOCAB_SIZE, seed=1, head_scale=4.0)
