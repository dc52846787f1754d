"""Incremental detokenization with stop strings, token by token.

Decoding a token alone can be wrong twice over: a multi-byte UTF-8 character split across tokens
decodes to U+FFFD until its last byte arrives, and SentencePiece-style tokenizers drop a leading
space when a token is decoded without the one before it. So each step decodes a short window that
starts a few tokens back and keeps only what the new token added, and waits while the window
ends in U+FFFD.

Stop strings are searched in the text as it grows; text that might still become the start of a
stop string is held back from the stream until it cannot, then released.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

# Tokens of context decoded before the new ones, enough to settle spaces and merges.
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing list of output token ids into text, and watches for stop strings."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_ids: list[int],
        stop: tuple[str, ...] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = list(prompt_ids[-CONTEXT_TOKENS:])
        # ids[prefix_offset:read_offset] is the context already turned into text.
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""
        self.num_released = 0
        self.stopped = False

    def add(self, token_id: int) -> bool:
        """Append one token; return True when the text now contains a stop string."""
        if self.stopped:
            raise RuntimeError("token added after a stop string")
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT_CHAR):
            previous_len = len(self.text)
            self.text += full[len(prefix) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self._find_stop(previous_len)
        return self.stopped

    def flush(self) -> None:
        """At the end of generation, keep whatever is still undecoded (even a broken character)."""
        if self.stopped or self.read_offset == len(self.ids):
            return
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        previous_len = len(self.text)
        self.text += full[len(prefix) :]
        self.read_offset = len(self.ids)
        self._find_stop(previous_len)

    def release(self, final: bool) -> str:
        """Return the text not yet released that can be sent now (all of it when `final`)."""
        end = len(self.text) if final or self.stopped else len(self.text) - self._held_back()
        delta = self.text[self.num_released : end]
        self.num_released = max(self.num_released, end)
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _find_stop(self, previous_len: int) -> None:
        for stop in self.stop:
            # A stop string can straddle the old text and the new, so look back len(stop) - 1.
            index = self.text.find(stop, max(previous_len - len(stop) + 1, 0))
            if index != -1:
                self.text = self.text[:index]
                self.stopped = True
                # Several stops may match: keep the earliest cut.
                previous_len = min(previous_len, index)

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
