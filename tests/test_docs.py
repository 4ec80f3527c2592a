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


# ---------------------------------------------------------------- shell commands in README.md and docs/

ROOT = DOCS.parent
SHELL_FENCE = re.compile(r"^```(?:bash|console|sh|shell)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
EXTERNAL = ("pip ", "python -m pytest", "python3.11 -m venv", "mlflow ", "ray ", "curl ", "git ", "cd ", "export ")
"""Commands of other tools: shown for the reader, not run (what they drive is tested elsewhere)."""


def shell_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number, command, the output lines shown under it) of every command line in ```bash/console blocks.

    A console block's command lines start with ``$ ``; the lines up to the next command are its sample output.
    ``# comments`` are dropped."""
    import shlex

    out: list[tuple[int, str, list[str]]] = []
    for m in SHELL_FENCE.finditer(text):
        first = text.count("\n", 0, m.start(1)) + 1
        lines = m.group(1).splitlines()
        console = any(ln.startswith("$ ") for ln in lines)
        for i, line in enumerate(lines):
            if console and not line.startswith("$ "):
                if out and out[-1][0] >= first:
                    out[-1][2].append(line)
                continue
            cmd = " ".join(shlex.split(line.removeprefix("$ "), comments=True))
            if cmd:
                out.append((first + i, cmd, []))
    return out


def _all_commands() -> list[tuple[str, int, str, list[str]]]:
    paths = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [(str(p.relative_to(ROOT)), n, cmd, sample) for p in paths for n, cmd, sample in shell_commands(p.read_text())]


COMMANDS = _all_commands()


def test_command_extractor():
    text = ("```bash\nsimulate list   # scenarios\n\npip install x\n```\n```console\n$ simulate list\na: b\n...\n"
            "$ simulate --scale tiny\n```\n```python\nsimulate no\n```\n")
    assert shell_commands(text) == [(2, "simulate list", []), (4, "pip install x", []),
                                    (7, "simulate list", ["a: b", "..."]), (10, "simulate --scale tiny", [])]


def _collapse(s: str) -> str:
    return " ".join(s.split())


@pytest.mark.parametrize(("doc", "line", "cmd", "sample"), COMMANDS, ids=[f"{d}:{n}" for d, n, _, _ in COMMANDS])
def test_doc_command(doc, line, cmd, sample, monkeypatch):
    """Every ``simulate`` command of the docs is validated by ``simulate --dry-run`` (scenario, scale, log,
    options; nothing runs), ``simulate list`` runs and its sample output must be in what it prints, a
    ``python benchmarks/...`` command names a benchmark that takes its options; other tools are allowed."""
    import shlex

    from typer.testing import CliRunner

    from simulator.cli import app

    where = f"{doc}:{line}: {cmd}"
    args = shlex.split(cmd)
    if args[0] == "simulate":
        if any("<" in a for a in args):  # a placeholder (e.g. a run id): check the options exist
            help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
            for a in args[1:]:
                assert not a.startswith("--") or a in help_text, f"{where}: unknown option {a}"
            return
        if any("../shared/" in a for a in args) and not (ROOT.parent / "shared").is_dir():
            pytest.skip(f"{where}: needs ../shared next to the checkout")
        monkeypatch.chdir(ROOT)
        dry = args[1:] if args[1:2] == ["list"] else [*args[1:], "--dry-run"]
        res = CliRunner().invoke(app, dry, env={"COLUMNS": "120"})
        assert res.exit_code == 0, f"{where}\n{res.output}"
        printed = _collapse(res.output)
        for shown in (s for s in sample if s.strip() and s.strip() != "..."):
            assert _collapse(shown) in printed, f"{where}: the docs show\n{shown}\nbut it prints\n{res.output}"
    elif args[0] == "python" and args[1].startswith("benchmarks/"):
        bench = ROOT / args[1]
        assert bench.is_file(), f"{where}: no {args[1]}"
        source = bench.read_text()
        for a in args[2:]:
            assert not a.startswith("--") or f'"{a}"' in source, f"{where}: {args[1]} has no option {a}"
    else:
        assert cmd.startswith(EXTERNAL), f"{where}: a command the doc runner does not know (add it to EXTERNAL?)"


def test_doc_command_fails_on_a_wrong_command(monkeypatch):
    for cmd, sample in (("simulate --scenario coldstart_ab --scale huge", []), ("simulate --bogus", []),
                        ("simulate list", ["nosuch: a scenario that does not exist"]),
                        ("python benchmarks/bench_aa.py --no-such-option", []), ("rm -rf /tmp/x", [])):
        with pytest.raises(AssertionError):
            test_doc_command("x.md", 1, cmd, sample, monkeypatch)
