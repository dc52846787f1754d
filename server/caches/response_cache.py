"""Exact-match cache of whole responses, for requests whose output their inputs fully determine.

A request is cacheable when it is greedy (temperature 0) or seeded. Unseeded sampling is never
cached: a client asking twice expects two independent samples.

The key covers everything that can change the tokens: the model, the prompt's token ids (after the
chat template, so two spellings of one conversation share an entry) and every sampling parameter
(max_tokens, stops, ignore_eos, temperature and filters, seed, logprobs). Speculation settings are
left out for greedy requests, because greedy speculative output equals the target's own greedy
output whatever the drafter. They are kept for seeded sampled requests: there the drafter and k
decide how many uniforms each step draws from the request's random stream, hence which tokens come
out.

Entries are the engine's outputs in order, so a hit replays the same chunks a stream first had.
The cache is bounded by entries and by (estimated) bytes, and evicts least recently used first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from server.engine.engine import RequestOutput
from server.engine.params import DrafterKind, SamplingParams, SpecParams

KEY_BYTES = 32
# Sampling fields that change speed only, never tokens.
OUTPUT_NEUTRAL_FIELDS = frozenset({"use_prefix_cache"})
# Rough Python object costs behind the byte estimate: an output with its lists and strings, an
# int in a list, one logprob entry (a small object holding a tuple of floats).
OUTPUT_OVERHEAD_BYTES = 400
TOKEN_ID_BYTES = 36
LOGPROB_ENTRY_BYTES = 120


@dataclass(frozen=True)
class CachedResponse:
    """A finished generation as the engine reported it, and the drafter that produced it."""

    outputs: tuple[RequestOutput, ...]
    drafter: DrafterKind

    @property
    def final(self) -> RequestOutput:
        return self.outputs[-1]

    @property
    def num_bytes(self) -> int:
        """An estimate of the memory the entry holds (texts, token ids, logprobs)."""
        total = 0
        for output in self.outputs:
            total += OUTPUT_OVERHEAD_BYTES + len(output.new_text.encode())
            total += TOKEN_ID_BYTES * len(output.new_token_ids)
            total += sum(LOGPROB_ENTRY_BYTES * (1 + len(lp.top)) for lp in output.new_logprobs)
        return total


def response_key(
    model: str,
    prompt_ids: list[int],
    sampling: SamplingParams,
    spec: SpecParams,
    drafter: DrafterKind,
) -> bytes | None:
    """The cache key of a request, or None when its output is not determined (unseeded sampling).

    `drafter` is the drafter that will actually run (the request's or the server's default).
    """
    if not sampling.deterministic:
        return None
    # Every field but the output-neutral ones, so that a field added later is keyed by default.
    sampling_part = tuple(
        (field.name, getattr(sampling, field.name))
        for field in dataclasses.fields(sampling)
        if field.name not in OUTPUT_NEUTRAL_FIELDS
    )
    speculation = None if sampling.greedy else (drafter.value, spec.num_draft_tokens)
    # repr of ints, strings, floats, tuples and None is exact and unambiguous.
    material = repr((model, tuple(prompt_ids), sampling_part, speculation))
    return hashlib.blake2b(material.encode(), digest_size=KEY_BYTES).digest()


class ResponseCache:
    """LRU map from request keys to finished responses, bounded by entries and bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(
                f"a response cache needs room (entries {max_entries}, bytes {max_bytes}); "
                "disable it instead"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, CachedResponse] = OrderedDict()
        self._num_bytes = 0
        # Handlers run on the event loop, but a scrape or a test may read from another thread.
        self._lock = threading.Lock()

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    @property
    def num_bytes(self) -> int:
        return self._num_bytes

    def get(self, key: bytes) -> CachedResponse | None:
        """The response stored under `key`, now the most recently used; None if absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, response: CachedResponse) -> int:
        """Store a response, evicting the least recently used; return how many were evicted.

        A response larger than the whole byte budget is not stored.
        """
        size = response.num_bytes
        if size > self.max_bytes:
            return 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._num_bytes -= old.num_bytes
            self._entries[key] = response
            self._num_bytes += size
            return self._evict_over_bounds()

    def _evict_over_bounds(self) -> int:
        evicted = 0
        while len(self._entries) > self.max_entries or self._num_bytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._num_bytes -= oldest.num_bytes
            evicted += 1
        return evicted
