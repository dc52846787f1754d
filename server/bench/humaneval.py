"""Execution-based pass@1 scoring of HumanEval completions.

Each check runs the problem's stub, the completion, the problem's tests and
`check(entry_point)` in a fresh `python -I` process: working directory a new temporary
folder, a near-empty environment, stdin at end-of-file, output to a size-capped file,
and resource limits (address space, CPU time, file size, no core dumps). The whole
process group is killed at the time limit.

This is containment against accidents (runaway loops, memory blow-ups, stray files), not
a security sandbox: the child can still read the file system, and network access is not
blocked beyond what the host provides. Only score model output on a machine where that
is acceptable.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from server.bench.datasets import (
    DEFAULT_DATA_DIR,
    FORMAT_FIELDS,
    HUMANEVAL_FILE,
    detect_format,
    read_jsonl,
)

logger = logging.getLogger(__name__)

# The slowest canonical solution takes well under a second; the margin absorbs a loaded
# machine (two checks share two cores) without letting a runaway loop cost much.
DEFAULT_TIMEOUT_S = 5.0
# Two workers: the benchmark machines have two CPU cores; each check is one busy process.
DEFAULT_WORKERS = 2
# The CPU-time limit backs up the wall-clock kill (say, if this process dies first).
CPU_LIMIT_MARGIN_S = 1
# HumanEval solutions need a few tens of MiB; a cap stops a runaway allocation long
# before swap.
MEMORY_LIMIT_BYTES = 1 << 30
# Caps both the captured output and any file the program writes.
OUTPUT_LIMIT_BYTES = 1 << 20
# How much of the output a CheckResult keeps, from the end, where tracebacks are.
OUTPUT_KEPT_CHARS = 2000
# A reason is one line, normally the exception that ended the program.
REASON_CHARS = 200

PROGRAM_FILE = "program.py"
OUTPUT_FILE = "output.txt"
# The child sets its own limits and then runs the program. This replaces `preexec_fn`,
# which CPython documents as unsafe when the parent has threads (as `score`'s pool
# does): the limits still apply before any line of the program runs. Soft and hard
# limits are both lowered, so an unprivileged program cannot raise them again.
LAUNCHER = """\
import resource, runpy, sys
for name, value in zip(("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE"), sys.argv[2:]):
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
sys.argv = sys.argv[1:2]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# Enough for the interpreter to find its locale; nothing of the caller's environment.
CHILD_ENVIRONMENT = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem: the stub shown to the model and the tests its completion must pass."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str = ""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Problem:
        fields = ("task_id", "prompt", "entry_point", "test", "canonical_solution")
        return cls(**{field: record[field] for field in fields if field in record})


@dataclass(frozen=True)
class CheckResult:
    """Whether a completion passed its tests; `reason` is "passed", "timeout" or what went wrong."""

    passed: bool
    reason: str
    output: str = ""


def load_problems(path: Path | str | None = None) -> list[Problem]:
    """HumanEval problems in file order (by default the shared data folder's copy)."""
    path = Path(path) if path is not None else DEFAULT_DATA_DIR / HUMANEVAL_FILE
    records = read_jsonl(path)
    if detect_format(records, path) != "humaneval":
        required = sorted(FORMAT_FIELDS["humaneval"])
        raise ValueError(f"{path}: not a HumanEval file (records need fields {required})")
    return [Problem.from_record(record) for record in records]


# ---------------------------------------------------------------------------------------------
# Building the program


def _entry_point_def(entry_point: str) -> re.Pattern[str]:
    """A top-level definition of the entry point (column 0, so not a nested helper)."""
    return re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)


def is_whole_function(completion: str, entry_point: str) -> bool:
    """Whether `completion` defines the entry point itself rather than continuing the stub."""
    return _entry_point_def(entry_point).search(completion) is not None


def build_program(problem: Problem, completion: str) -> str:
    """The script that checks one completion.

    A completion comes in one of two forms, told apart by `is_whole_function`:
    - a body continuation (what a completion model writes, and the canonical solutions):
      it is appended to the stub, which ends inside the function's docstring-only body;
    - a whole function (what chat models write): it replaces the stub's entry point, so
      it runs after the stub's preamble, the imports and helper functions before the
      entry point's `def`. Appending it after the full stub would rely on the stub's
      `def` having a body of its own and would keep a second, dead definition around.
    """
    if is_whole_function(completion, problem.entry_point):
        code = _stub_preamble(problem) + completion
    else:
        code = problem.prompt + completion
    return f"{code}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def _stub_preamble(problem: Problem) -> str:
    match = _entry_point_def(problem.entry_point).search(problem.prompt)
    return problem.prompt[: match.start()] if match else problem.prompt


# ---------------------------------------------------------------------------------------------
# Running it


def check_completion(
    problem: Problem, completion: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> CheckResult:
    """Run `problem`'s tests against `completion` in a limited subprocess (see `build_program`)."""
    with tempfile.TemporaryDirectory(prefix="humaneval-") as work_dir:
        work_path = Path(work_dir)
        (work_path / PROGRAM_FILE).write_text(build_program(problem, completion), encoding="utf-8")
        with open(work_path / OUTPUT_FILE, "wb") as output_file:
            return_code = _run_limited(work_path, output_file, timeout_s)
        output_bytes = (work_path / OUTPUT_FILE).stat().st_size
        output = _read_tail(work_path / OUTPUT_FILE)

    if return_code is None:
        return CheckResult(False, "timeout", output)
    if return_code == 0:
        return CheckResult(True, "passed", output)
    if output_bytes >= OUTPUT_LIMIT_BYTES:
        return CheckResult(False, "output limit", output)
    return CheckResult(False, _failure_reason(return_code, output), output)


def _run_limited(work_path: Path, output_file: BinaryIO, timeout_s: float) -> int | None:
    """The child's exit code, or None if it ran out of time; its process group is killed anyway."""
    cpu_limit_s = math.ceil(timeout_s) + CPU_LIMIT_MARGIN_S
    limits = (MEMORY_LIMIT_BYTES, cpu_limit_s, OUTPUT_LIMIT_BYTES, 0)
    command = [sys.executable, "-I", "-c", LAUNCHER, PROGRAM_FILE, *map(str, limits)]
    child = subprocess.Popen(
        command,
        cwd=work_path,
        env=CHILD_ENVIRONMENT,
        stdin=subprocess.DEVNULL,
        stdout=output_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so grandchildren die with it
    )
    try:
        return child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        _kill_group(child)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone
    child.wait()


def _read_tail(path: Path) -> str:
    text = path.read_bytes()[-OUTPUT_LIMIT_BYTES:].decode("utf-8", errors="replace")
    return text[-OUTPUT_KEPT_CHARS:]


def _failure_reason(return_code: int, output: str) -> str:
    if return_code < 0:
        return f"killed by {signal.Signals(-return_code).name}"
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip()[:REASON_CHARS] if lines else f"exit code {return_code}"


def score(
    problems: Sequence[Problem],
    completions: Sequence[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
) -> list[CheckResult]:
    """Check each completion against the problem at the same index, `workers` at a time."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(check_completion, problems, completions, [timeout_s] * len(problems))
        )
    logger.info("HumanEval: %d of %d passed", sum(r.passed for r in results), len(results))
    return results


def pass_at_1(results: Sequence[CheckResult]) -> float:
    """Fraction of problems solved, one sample each."""
    if not results:
        raise ValueError("pass@1 of no results is undefined")
    return sum(result.passed for result in results) / len(results)


# ---------------------------------------------------------------------------------------------
# From a model's answer to a completion

# A fenced block, maybe indented (in a list item), maybe unclosed (a truncated answer).
FENCED_BLOCK = re.compile(
    r"^[ \t]*```[ \t]*(?P<language>[\w+-]*)[^\n]*\n(?P<code>.*?)(?:^[ \t]*```|\Z)", re.S | re.M
)
PYTHON_FENCE_TAGS = frozenset({"", "python", "py", "python3"})
# Top-level statements a whole-function answer keeps: they define things. Everything
# else (a `print(...)`, an `if __name__ == "__main__":` demo reading stdin, asserts of
# its own) runs things.
KEPT_STATEMENTS = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AnnAssign,
)
# The same rule by lines, for code that does not parse: prose at column 0 is a statement.
DEFINITION_LINE = re.compile(
    r"^(?:def |async def |class |import |from \S+ import |@|#|[A-Za-z_]\w*\s*(?::[^=]+)?=[^=])"
)
# Column-0 lines that continue the statement before them rather than start a new one.
CONTINUATION_LINE = re.compile(r"^(?:[)\]}]|else\b|elif\b|except\b|finally\b)")
BODY_INDENT = " " * 4


def extract_code(model_output: str, problem: Problem) -> str:
    """The completion in a model's answer, in either form `build_program` accepts.

    The code is the first ```python (or untagged) fenced block that defines the entry
    point, else the first such block, else the whole answer (a completion model's raw
    continuation). Code that defines the entry point at the top level is a whole
    function; it keeps its top-level definitions, imports and assignments and drops
    other top-level statements. Otherwise it is a body: an unindented body (a chat model
    writing just the statements) is indented one level; an indented one is cut where the
    function ends, keeping later top-level definitions.
    """
    code = _fenced_code(model_output, problem.entry_point)
    if code is None:
        code = model_output
    code = code.strip("\n")
    if is_whole_function(code, problem.entry_point):
        return _keep_definitions(code)
    if code and not code[0].isspace():
        return textwrap.indent(code, BODY_INDENT) + "\n"
    return _keep_definitions(code)


def _fenced_code(model_output: str, entry_point: str) -> str | None:
    blocks = [
        textwrap.dedent(match.group("code"))
        for match in FENCED_BLOCK.finditer(model_output)
        if match.group("language").lower() in PYTHON_FENCE_TAGS
    ]
    for block in blocks:
        if is_whole_function(block, entry_point):
            return block
    return blocks[0] if blocks else None


def _keep_definitions(code: str) -> str:
    """Drop the top-level statements that are not definitions (see KEPT_STATEMENTS)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return _keep_definition_lines(code)
    lines = code.splitlines()
    kept = []
    for node in tree.body:
        if isinstance(node, KEPT_STATEMENTS):
            decorators = getattr(node, "decorator_list", [])
            first_line = min([node.lineno] + [decorator.lineno for decorator in decorators])
            kept.extend(lines[first_line - 1 : node.end_lineno])
    return "\n".join(kept) + "\n"


def _keep_definition_lines(code: str) -> str:
    """`_keep_definitions` by lines: a body continuation, or code with prose in it, cannot parse.

    Multi-line strings with lines at column 0 confuse it; code that parses avoids it.
    """
    kept = []
    keeping = True
    for line in code.splitlines():
        starts_statement = (
            bool(line) and not line[0].isspace() and not CONTINUATION_LINE.match(line)
        )
        if starts_statement:
            keeping = DEFINITION_LINE.match(line) is not None
        if keeping:
            kept.append(line)
    return "\n".join(kept).rstrip() + "\n"
