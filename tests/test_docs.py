"""Docs that run: every ```python run block in docs/ (and docs/models/) is executed, each in a fresh namespace.

Blocks are marked with the info string ``python run``; plain ``python`` blocks are illustrations
and are not run. A runnable block is self-contained, fast (well under 2 s) and starts no Ray.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MUST_HAVE_RUNNABLE = ("architecture.md", "scenarios.md", "models/dualrec.md")
FENCE = re.compile(r"^```python run[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every ```python run block in a markdown text."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def _all_blocks() -> list[tuple[str, int, str]]:
    return [(str(path.relative_to(DOCS)), line, src) for path in sorted(DOCS.rglob("*.md"))
            for line, src in runnable_blocks(path.read_text())]


BLOCKS = _all_blocks()


def test_extractor_reads_only_runnable_python_blocks():
    text = "x\n```python run\na = 1\n```\n```python\nb = 2\n```\n```text\nc\n```\n```python run\nd = 3\n```\n"
    assert runnable_blocks(text) == [(3, "a = 1\n"), (12, "d = 3\n")]


@pytest.mark.parametrize("name", MUST_HAVE_RUNNABLE)
def test_doc_has_runnable_blocks(name):
    assert (DOCS / name).is_file(), f"docs/{name} is missing"
    assert runnable_blocks((DOCS / name).read_text()), f"docs/{name} has no ```python run block"


@pytest.mark.parametrize(("doc", "line", "source"), BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_doc_block_runs(doc, line, source):
    assert not re.search(r"^\s*(import|from)\s+ray\b", source, re.MULTILINE), f"{doc}:{line}: runnable blocks start no Ray"
    code = compile("\n" * (line - 1) + source, f"docs/{doc}", "exec")  # tracebacks show the doc's line numbers
    exec(code, {"__name__": f"docs.{doc}"})  # noqa: S102 - running the docs is the point
