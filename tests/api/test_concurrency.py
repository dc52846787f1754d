"""Many requests at once: each answer is the one it gets alone (no cross-talk between rows)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api.support import TARGET_NAME, Served

NUM_CONCURRENT = 16
MAX_TOKENS = 24


def prompts() -> list[str]:
    """Distinct prompts of different lengths, so that rows of a batch differ in every way."""
    return [f"request {i}: " + "abcdefgh"[: i % 8] * (1 + i % 3) for i in range(NUM_CONCURRENT)]


def complete(served: Served, prompt: str, drafter: str) -> str:
    response = served.client.completions.create(
        model=TARGET_NAME,
        prompt=prompt,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        extra_body={"ignore_eos": True, "speculative": {"drafter": drafter}},
    )
    return response.choices[0].text


def stream_text(served: Served, prompt: str) -> str:
    stream = served.client.completions.create(
        model=TARGET_NAME,
        prompt=prompt,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    return "".join(chunk.choices[0].text for chunk in stream if chunk.choices)


def test_concurrent_requests_match_their_answers_alone(served: Served) -> None:
    texts = prompts()
    # Alone: one at a time, speculation off, the plain target's greedy output.
    alone = [complete(served, prompt, "none") for prompt in texts]

    # Together: mixed drafters and streaming, all in flight at once.
    drafters = ["model", "ngram", "combined", "none"]
    with ThreadPoolExecutor(max_workers=NUM_CONCURRENT) as pool:
        futures = []
        for i, prompt in enumerate(texts):
            if i % 5 == 4:
                futures.append(pool.submit(stream_text, served, prompt))
            else:
                futures.append(pool.submit(complete, served, prompt, drafters[i % len(drafters)]))
        together = [future.result() for future in futures]

    assert together == alone
