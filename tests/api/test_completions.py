"""Completions, chat, the model list and health through the official OpenAI client."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from server.engine.params import DrafterKind
from tests.api.support import DRAFT_NAME, TARGET_NAME, Served, extension

GREEDY = 0.0
SAMPLED = 1.0


def test_completion_has_the_openai_shape_and_extensions(served: Served) -> None:
    response = served.client.completions.create(
        model=TARGET_NAME, prompt="def add(a, b):", max_tokens=12, temperature=GREEDY
    )
    assert response.object == "text_completion"
    assert response.id.startswith("cmpl-")
    assert response.model == TARGET_NAME
    (choice,) = response.choices
    assert choice.index == 0
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens == len(b"def add(a, b):")  # one token per byte
    assert 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    speculative = extension(response, "speculative")
    assert speculative["drafter"] == DrafterKind.MODEL.value
    assert speculative["accepted_tokens"] <= speculative["drafted_tokens"]


def test_length_finish_reason_and_exact_token_count(served: Served) -> None:
    response = served.client.completions.create(
        model=TARGET_NAME,
        prompt="hello",
        max_tokens=9,
        temperature=GREEDY,
        extra_body={"ignore_eos": True},
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 9


def test_prompt_forms_give_the_same_completion(served: Served) -> None:
    """A string, a list of one string and the string's token ids are one prompt."""
    prompt = "print('hi')"
    token_ids = list(prompt.encode())  # the tiny tokenizer maps each byte to its own id
    texts = {
        served.client.completions.create(
            model=TARGET_NAME, prompt=form, max_tokens=8, temperature=GREEDY
        )
        .choices[0]
        .text
        for form in (prompt, [prompt], token_ids, [token_ids])
    }
    assert len(texts) == 1


def test_model_may_be_omitted(served: Served) -> None:
    response = served.http.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 2, "temperature": 0}
    )
    assert response.status_code == HTTPStatus.OK
    assert response.json()["model"] == TARGET_NAME


def test_chat_completion(served: Served) -> None:
    response = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[
            {"role": "system", "content": "You write Python."},
            {"role": "user", "content": "Add two numbers."},
            {"role": "assistant", "content": "def add(a, b): return a + b"},
            {"role": "user", "content": [{"type": "text", "text": "Now subtract."}]},
        ],
        max_tokens=10,
        temperature=GREEDY,
    )
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert response.usage is not None and response.usage.completion_tokens >= 1
    assert extension(response, "speculative")


def test_chat_prompt_is_the_chat_template(served: Served) -> None:
    """The chat endpoint equals a completion of the rendered template."""
    content = "héllo 😀"
    message: ChatCompletionUserMessageParam = {"role": "user", "content": content}
    chat = served.client.chat.completions.create(
        model=TARGET_NAME, messages=[message], max_tokens=8, temperature=GREEDY
    )
    rendered = served.engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    completion = served.client.completions.create(
        model=TARGET_NAME, prompt=list(rendered), max_tokens=8, temperature=GREEDY
    )
    assert chat.choices[0].message.content == completion.choices[0].text
    assert chat.usage is not None and chat.usage.prompt_tokens == len(rendered)


def test_max_completion_tokens_is_honoured(served: Served) -> None:
    response = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=5,
        temperature=GREEDY,
        extra_body={"ignore_eos": True},
    )
    assert response.usage is not None and response.usage.completion_tokens == 5


@pytest.mark.parametrize("drafter", [kind.value for kind in DrafterKind])
def test_every_drafter_gives_the_greedy_target_output(served: Served, drafter: str) -> None:
    def complete(speculative: dict[str, object], expected_drafter: str) -> str:
        response = served.client.completions.create(
            model=TARGET_NAME,
            prompt="for i in range(10):",
            max_tokens=24,
            temperature=GREEDY,
            extra_body={"ignore_eos": True, "speculative": speculative},
        )
        assert extension(response, "speculative")["drafter"] == expected_drafter
        return response.choices[0].text

    plain = complete({"enabled": False}, DrafterKind.NONE.value)
    assert complete({"drafter": drafter}, drafter) == plain


def test_fixed_k_drafts_k_tokens_per_step(served: Served) -> None:
    response = served.client.completions.create(
        model=TARGET_NAME,
        prompt="abc",
        max_tokens=20,
        temperature=GREEDY,
        extra_body={"ignore_eos": True, "speculative": {"drafter": "model", "k": 3}},
    )
    speculative = extension(response, "speculative")
    assert speculative["drafted_tokens"] > 0
    assert len(speculative["drafted_per_position"]) <= 3
    assert speculative["acceptance_rate"] == pytest.approx(
        speculative["accepted_tokens"] / speculative["drafted_tokens"], abs=1e-4
    )


def test_seed_makes_sampling_reproducible(served: Served) -> None:
    def sample(seed: int) -> str:
        response = served.client.completions.create(
            model=TARGET_NAME,
            prompt="Once upon a time",
            max_tokens=24,
            temperature=SAMPLED,
            top_p=0.95,
            seed=seed,
            extra_body={"ignore_eos": True, "top_k": 50, "min_p": 0.01},
        )
        return response.choices[0].text

    assert sample(7) == sample(7)
    assert sample(11) == sample(11)
    assert sample(7) != sample(11)  # the seed is used, not ignored


def test_stop_string_through_the_client(served: Served) -> None:
    """The client's `stop` cuts the text before the stop string, streamed or not."""
    request = dict(
        model=TARGET_NAME,
        prompt="abc",
        max_tokens=24,
        temperature=GREEDY,
        extra_body={"ignore_eos": True},
    )
    full = served.client.completions.create(**request)
    text = full.choices[0].text
    # A stop string taken from inside the greedy answer: it must end the answer there.
    stop = text[5:7]
    assert len(stop) == 2
    expected = text[: text.index(stop)]

    cut = served.client.completions.create(**request, stop=[stop])
    assert cut.choices[0].text == expected
    assert cut.choices[0].finish_reason == "stop"
    stream = served.client.completions.create(**request, stop=stop, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == expected


def test_completion_logprobs(served: Served) -> None:
    response = served.client.completions.create(
        model=TARGET_NAME, prompt="xyz", max_tokens=6, temperature=GREEDY, logprobs=3
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and response.usage is not None
    num_tokens = response.usage.completion_tokens
    assert logprobs.tokens is not None and len(logprobs.tokens) == num_tokens
    assert logprobs.token_logprobs is not None and len(logprobs.token_logprobs) == num_tokens
    assert logprobs.top_logprobs is not None
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert chosen <= 0
        assert 1 <= len(top) <= 3
        # Greedy: the chosen token is the most likely one.
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)


def test_chat_logprobs(served: Served) -> None:
    response = served.client.chat.completions.create(
        model=TARGET_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=GREEDY,
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert response.usage is not None
    assert len(logprobs.content) == response.usage.completion_tokens
    for entry in logprobs.content:
        assert len(entry.top_logprobs) == 2
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-5)


def test_models_lists_target_and_draft(served: Served) -> None:
    models = served.client.models.list()
    assert [model.id for model in models.data] == [TARGET_NAME, DRAFT_NAME]
    assert all(model.object == "model" for model in models.data)
    roles = [extension(model, "role") for model in models.data]
    assert roles == ["target", "draft"]


def test_health(served: Served) -> None:
    response = served.http.get("/health")
    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "ok"
