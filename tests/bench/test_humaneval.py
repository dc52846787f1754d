import time
from pathlib import Path

import pytest

from server.bench.datasets import DEFAULT_DATA_DIR
from server.bench.humaneval import (
    Problem,
    build_program,
    check_completion,
    extract_code,
    load_problems,
    pass_at_1,
    score,
)

needs_data = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason=f"shared benchmark data not found at {DEFAULT_DATA_DIR}"
)

# Short limit for checks meant to be cut off; ample for the rest on a loaded two-core machine.
SHORT_TIMEOUT_S = 2.0
# How long a killed process may take to disappear, and how often to look.
KILL_GRACE_S = 5.0
POLL_INTERVAL_S = 0.05

# A problem in HumanEval's shape with a helper before the entry point, like HumanEval/10 or /32.
CIRCLE = Problem(
    task_id="toy/circle",
    prompt=(
        "import math\n\n\n"
        "def square(x: float) -> float:\n    return x * x\n\n\n"
        'def area(radius: float) -> float:\n    """Area of a circle."""\n'
    ),
    entry_point="area",
    test="def check(candidate):\n    assert abs(candidate(2.0) - 4 * math.pi) < 1e-9\n",
    canonical_solution="    return math.pi * square(radius)\n",
)
WHOLE_FUNCTION = "def area(radius):\n    return math.pi * square(radius)\n"


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_problems()


@needs_data
def test_canonical_solutions_all_pass(problems):
    results = score(problems, [problem.canonical_solution for problem in problems])
    assert len(problems) == 164
    assert [result.reason for result in results] == ["passed"] * len(problems)
    assert pass_at_1(results) == 1.0


@needs_data
def test_empty_completions_all_fail(problems):
    results = score(problems, [""] * len(problems))
    assert pass_at_1(results) == 0.0


@needs_data
def test_whole_function_answers_run_after_the_stubs_helpers(problems):
    # Problems whose stub defines helpers or constants before the entry point, and a few plain ones.
    chosen = [problems[index] for index in (0, 1, 2, 10, 32, 38, 50, 64)]
    answers = [
        f"Here you go:\n\n```python\n{problem.prompt}{problem.canonical_solution}```\nDone."
        for problem in chosen
    ]
    completions = [
        extract_code(answer, problem) for answer, problem in zip(answers, chosen, strict=True)
    ]
    assert pass_at_1(score(chosen, completions)) == 1.0


def test_body_and_whole_function_forms():
    assert check_completion(CIRCLE, CIRCLE.canonical_solution).passed
    assert check_completion(CIRCLE, WHOLE_FUNCTION).passed
    program = build_program(CIRCLE, WHOLE_FUNCTION)
    assert program.count("def area") == 1 and "def square" in program


def test_failures_report_their_reason():
    wrong = check_completion(CIRCLE, "    return 0.0\n")
    assert not wrong.passed and wrong.reason == "AssertionError"
    broken = check_completion(CIRCLE, "    return (\n")
    assert not broken.passed and broken.reason.startswith("SyntaxError")
    reads_stdin = check_completion(CIRCLE, "    return float(input())\n")
    assert reads_stdin.reason.startswith("EOFError")


def test_endless_loop_is_stopped_and_fails():
    result = check_completion(CIRCLE, "    while True:\n        pass\n", timeout_s=SHORT_TIMEOUT_S)
    assert result == type(result)(passed=False, reason="timeout", output="")


def test_forked_children_die_with_the_check(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    completion = (
        "    import os\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    while True:\n        pass\n"
    )
    assert check_completion(CIRCLE, completion, timeout_s=SHORT_TIMEOUT_S).reason == "timeout"
    grandchild_stat = Path(f"/proc/{pid_file.read_text()}/stat")
    # SIGKILL lands asynchronously; this container's init may leave the dead child a zombie.
    deadline = time.monotonic() + KILL_GRACE_S
    while is_running(grandchild_stat) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    assert not is_running(grandchild_stat)


def is_running(proc_stat: Path) -> bool:
    try:
        state = proc_stat.read_text().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_resource_limits():
    too_big = check_completion(CIRCLE, "    return len(bytearray(4 << 30))\n")
    assert too_big.reason == "MemoryError"
    chatty = "    while True:\n        print('spam' * 1000)\n"
    assert check_completion(CIRCLE, chatty, timeout_s=SHORT_TIMEOUT_S).reason == "output limit"


def test_score_needs_one_completion_per_problem():
    with pytest.raises(ValueError, match="1 problems but 2 completions"):
        score([CIRCLE], ["", ""])


# ---------------------------------------------------------------------------------------------
# extract_code


def test_extract_whole_function_from_fenced_answer():
    answer = (
        "First a sketch:\n```python\nx = area(1)\n```\n"
        f"The solution:\n```python\nimport math\n\n{WHOLE_FUNCTION}\n"
        "print(area(2.0))\nif __name__ == '__main__':\n    area(float(input()))\n```\n"
        "It uses the helper."
    )
    assert extract_code(answer, CIRCLE) == f"import math\n{WHOLE_FUNCTION}"


def test_extract_keeps_multiline_strings_and_constants():
    code = f'NOTE = """\nat column 0\n"""\n@staticmethod\n{WHOLE_FUNCTION}'
    assert extract_code(f"```py\n{code}```", CIRCLE) == code


def test_extract_indents_a_bare_fenced_body():
    answer = "```python\nresult = math.pi * square(radius)\nreturn result\n```"
    completion = extract_code(answer, CIRCLE)
    assert completion == "    result = math.pi * square(radius)\n    return result\n"
    assert check_completion(CIRCLE, completion).passed


def test_extract_cuts_a_raw_continuation_where_the_function_ends():
    raw = "    return math.pi * square(radius)\n\n\ndef unused():\n    pass\n\n\nprint(area(1))\n"
    assert (
        extract_code(raw, CIRCLE)
        == "    return math.pi * square(radius)\n\n\ndef unused():\n    pass\n"
    )


def test_extract_unfenced_answer_with_prose():
    answer = f"Sure, here it is.\n{WHOLE_FUNCTION}Hope this helps!"
    assert extract_code(answer, CIRCLE) == WHOLE_FUNCTION


def test_extract_unclosed_fence_from_a_truncated_answer():
    answer = f"```python\n{WHOLE_FUNCTION}"
    assert extract_code(answer, CIRCLE) == WHOLE_FUNCTION
