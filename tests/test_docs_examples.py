"""The guides' runnable examples run, and each bare expression whose comment is a Python literal
(``result.ranks_by_bond   # {'A': 2, 'B': 4, 'C': 3}``) evaluates to that literal, and what an
example prints is what the ``text`` block after it shows (timings and values below 1e-6 masked):
a change that moves a documented result fails here instead of leaving the page wrong. Pages whose
examples are sketches (placeholders such as ``data`` or a training loop) are not listed."""
from __future__ import annotations

import ast
import contextlib
import io
import numbers
import pathlib
import re
import warnings

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = ["concepts.md", "getting-started.md", "guides/approximation.md", "guides/completion.md",
         "guides/recurrent.md", pytest.param("guides/structure.md", marks=pytest.mark.slow)]
#: a python example and, when a ``text`` block follows it, the output it shows
EXAMPLE = re.compile(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", re.S)
#: what varies between runs of the same code: search timings and counts, round-off-sized numbers
_VARIES = [(re.compile(r"\(\d[\d,]* refits, [\d.]+ s\)"), "(refits, time)"),
           (re.compile(r"\b\d(?:\.\d+)?e-(?:0?[6-9]|[1-9]\d)\b"), "~0")]


def _masked(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _VARIES:
            line = pattern.sub(replacement, line)
        if line.strip():
            lines.append(line.rstrip())
    return lines


def _claims(tree: ast.Module, lines: list[str]) -> list[tuple[ast.stmt, object]]:
    """Top-level expression statements of a parsed block whose trailing comment is a literal."""
    out = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            continue
        comment = _after(lines, stmt)
        if not comment.startswith("#"):
            continue
        try:
            out.append((stmt, ast.literal_eval(comment[1:].strip())))
        except (ValueError, SyntaxError):
            continue  # prose ("e.g. ...", "the pruned Network")
    return out


def _after(lines: list[str], stmt: ast.stmt) -> str:
    """The text after ``stmt`` on its last line (``end_col_offset`` counts UTF-8 bytes)."""
    return lines[stmt.end_lineno - 1].encode()[stmt.end_col_offset:].decode().strip()


def _significant_digits(shown: str) -> int:
    mantissa = shown.lower().lstrip("+-").split("e")[0].replace(".", "")
    return max(1, len(mantissa.lstrip("0")))


def _same(value: object, claim: object, shown: str) -> bool:
    """``value`` equals ``claim``; a float claim to the significant digits shown."""
    if isinstance(claim, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(f"{float(value):.{_significant_digits(shown)}g}") == claim
    if isinstance(claim, int) and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value) == claim
    if isinstance(claim, tuple) and isinstance(value, (list, tuple)):  # torch.Size is a tuple
        value = tuple(value)
    return type(value) is type(claim) and value == claim


@pytest.mark.parametrize("page", PAGES)
def test_the_pages_examples_run_and_give_what_their_comments_say(page, monkeypatch, tmp_path):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    examples = EXAMPLE.findall((DOCS / page).read_text())
    assert examples, f"{page} has no python example"
    namespace: dict = {"__name__": "__docs__"}
    checked = 0
    for i, (block, shown_output) in enumerate(examples):
        tree = ast.parse(block)
        lines = block.splitlines()
        claims = {id(stmt): claim for stmt, claim in _claims(tree, lines)}
        printed = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            for stmt in tree.body:
                code = compile(ast.Module([stmt], []), f"{page} example {i}", "exec")
                if id(stmt) in claims:
                    value = eval(compile(ast.Expression(stmt.value), f"{page} example {i}", "eval"), namespace)
                    shown = _after(lines, stmt)[1:].strip()
                    assert _same(value, claims[id(stmt)], shown), (
                        f"{page} example {i}, line {stmt.lineno}: {ast.unparse(stmt.value)} is {value!r}, the page "
                        f"says {shown}")
                    checked += 1
                else:
                    exec(code, namespace)
        if shown_output:
            assert _masked(printed.getvalue()) == _masked(shown_output), (
                f"{page} example {i} printed\n{printed.getvalue()}\nbut the page shows\n{shown_output}")
            checked += 1
    assert checked, f"{page}: no checked claim (the test would not catch a change)"


def test_a_claim_that_does_not_hold_is_caught():
    block = "x = 3\nx + 1   # 5\nx  # e.g. 3\n"
    (stmt, claim), = _claims(ast.parse(block), block.splitlines())
    assert claim == 5 and not _same(4, claim, "5")
    assert _same(0.00961, 0.0096, "0.0096") and not _same(0.0098, 0.0096, "0.0096")
    assert _same(1.04e-05, 1e-05, "1e-05") and not _same(0.3, 1e-05, "1e-05") and not _same(0.4, 2e-3, "2e-3")
    assert _same([2, 3], (2, 3), "(2, 3)") and not _same({"A": 2, "B": 3}, ("A", "B"), "('A', 'B')")
    block = "x = 3\n'\u00b5\u00b5\u00b5' and x   # 3\n"
    assert [claim for _, claim in _claims(ast.parse(block), block.splitlines())] == [3]  # non-ASCII before it
    assert _masked("ring 0-1  (172 refits, 9.7 s)\nerror 4.387e-13 and 2.5e-3\n") == \
        ["ring 0-1  (refits, time)", "error ~0 and 2.5e-3"]
