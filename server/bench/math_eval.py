"""Exact-match scoring of GSM8K-style answers: the final number of an answer against a reference.

Spec-Bench's `math_reasoning` references are GSM8K worked solutions, calculator notes
included (`400*.5=$<<400*.5=200>>200`), ending in a line `#### 1000`; the file stores
them as a one-item list (one reference per turn). Either form is accepted here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

# A number as people write it: optional sign and currency, thousands grouped by commas
# (only in groups of three, so "1,2,3" stays three numbers), an optional decimal part.
# The sign counts only where it cannot be a subtraction or a range ("10-3", "4-7").
NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\]])-)?(?:\$\s?)?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<fraction>\.\d+)?"
    r"|(?P<bare_fraction>(?<!\d)\.\d+)"
)
# Markers of a final answer, strongest first: LaTeX `\boxed{...}`, then GSM8K's
# `#### answer` line.
BOXED = re.compile(r"\\boxed\s*\{(?P<content>[^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
FINAL_ANSWER_MARKER = "####"


def extract_final_number(text: str) -> str | None:
    """The answer's final number, normalised: "1,234.50" -> "1234.5", "$-3" -> "-3", "12.0" -> "12".

    Where the answer is marked, the mark decides: the last number inside the last
    `\\boxed{}`, else the first number after the last `####`. Otherwise the last number
    in the text. None when there is no number. Fractions and scientific notation are not
    understood ("1/2" reads as 2).
    """
    boxed = list(BOXED.finditer(text))
    if boxed:
        numbers = list(NUMBER.finditer(boxed[-1].group("content")))
        return _normalise(numbers[-1]) if numbers else None
    if FINAL_ANSWER_MARKER in text:
        first = NUMBER.search(text.rsplit(FINAL_ANSWER_MARKER, 1)[1])
        return _normalise(first) if first else None
    numbers = list(NUMBER.finditer(text))
    return _normalise(numbers[-1]) if numbers else None


def _normalise(match: re.Match[str]) -> str:
    if match.group("bare_fraction"):
        literal = "0" + match.group("bare_fraction")
    else:
        literal = match.group("digits").replace(",", "") + (match.group("fraction") or "")
    value = Decimal(literal)  # the pattern admits only digits, so this always parses
    if match.group("sign"):
        value = -value
    if value == 0:
        value = Decimal(0)  # "-0" and "0.00" are zero
    # normalize() drops trailing zeros; format "f" keeps 100 from becoming "1E+2".
    return format(value.normalize(), "f")


def is_correct(answer_text: str, reference: str | Sequence[str]) -> bool:
    """Whether the answer's final number equals the reference's.

    A list reference holds one reference per conversation turn, as Spec-Bench stores
    them; the first turn's is used. A reference without a number can never be matched.
    """
    if not isinstance(reference, str):
        if not reference:
            raise ValueError("reference list is empty")
        reference = reference[0]
    expected = extract_final_number(reference)
    answer = extract_final_number(answer_text)
    return expected is not None and answer is not None and Decimal(answer) == Decimal(expected)
