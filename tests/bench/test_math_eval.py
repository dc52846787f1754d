import pytest

from server.bench.datasets import DEFAULT_DATA_DIR, load_spec_bench
from server.bench.math_eval import extract_final_number, is_correct

needs_data = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason=f"shared benchmark data not found at {DEFAULT_DATA_DIR}"
)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("So she has 18 apples.", "18"),
        ("The total is 1,234 dollars.", "1234"),
        ("It costs $1,234.50 in all.", "1234.5"),
        ("That leaves -3 degrees.", "-3"),
        ("A loss of $-5, i.e. -$5", "-5"),
        ("The answer is 12.0", "12"),
        ("exactly 0.50 of it", "0.5"),
        ("x = .25", "0.25"),
        ("10 - 3 = 7", "7"),
        ("read pages 4-7", "7"),
        ("the digits 1,2,3", "3"),
        ("she came 3rd with 42 points", "42"),
        ("We get \\boxed{42}, checked with 7 examples.", "42"),
        ("\\boxed{\\$1,000}", "1000"),
        ("She earns 18 a day\n#### 72\nThe steps above used 5 days.", "72"),
        ("#### -0", "0"),
        ("no numbers here", None),
        ("#### none", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("The tickets cost $1,000.", "so 600+400=$<<600+400=1000>>1000 in total.\n#### 1000", True),
        ("The answer is 1000.00", ["Some working.\n#### 1,000"], True),
        ("The answer is 999", "#### 1000", False),
        ("I do not know", "#### 1000", False),
        ("It is 5", "no number in this reference", False),
        ("-3", "#### -3", True),
    ],
)
def test_is_correct(answer, reference, correct):
    assert is_correct(answer, reference) is correct


@needs_data
def test_spec_bench_math_references_parse():
    prompts = load_spec_bench(categories=["math_reasoning"])
    finals = [extract_final_number(prompt.reference) for prompt in prompts]
    assert len(finals) == 80 and None not in finals
    # The first three references, read by eye from the file.
    assert finals[:3] == ["1000", "5", "306"]
    assert "-3" in finals
    for prompt, final in zip(prompts, finals, strict=True):
        assert is_correct(f"So the answer is {final}.", prompt.reference)
