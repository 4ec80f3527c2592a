"""Docs that run: every ```python run block in docs/ (and docs/models/) is executed, each in a fresh namespace.

Blocks are marked with the info string ``python run``; plain ``python`` blocks are illustrations
and are not run. A runnable block is self-contained, fast (well under 2 s) and starts no Ray.
"""

from __future__ import annotations

import hashlib
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
EXTERNAL = ("pip ", "python -m pytest", "python3.11 -m venv", "mlflow ", "ray ", "curl ", "git ", "cd ", "export ",
            "python -m serving.http", "kubectl ")
"""Commands of other tools, or servers that run until stopped: shown for the reader, not run here (what they
drive is tested elsewhere: docs/serving.md's curl examples and server command by tests/serving/test_http_docs.py)."""


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


FIXTURES = ROOT / "tests" / "fixtures"


def _stand_ins(root: Path) -> dict[str, Path]:
    """A local archive for each dataset of the registry, made from the hand-made fixtures in the publishers' own
    layouts (tests/fixtures): what `simulate data get NAME` downloads, without the network."""
    import gzip
    import tarfile
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("ml-100k", "ml-latest-small", "ml-1m"):
        out[name] = root / f"{name}.zip"
        with zipfile.ZipFile(out[name], "w") as zf:
            for f in sorted((FIXTURES / "movielens" / name).iterdir()):
                zf.write(f, f"{name}/{f.name}")
    out["amazon-musical-instruments"] = root / "Musical_Instruments_5.json.gz"
    out["amazon-musical-instruments"].write_bytes(gzip.compress((FIXTURES / "amazon" / "Musical_Instruments_5.json").read_bytes()))
    out["kuairand-pure"] = root / "KuaiRand-Pure.tar.gz"
    with tarfile.open(out["kuairand-pure"], "w:gz") as tf:
        for f in sorted((FIXTURES / "kuairand").iterdir()):
            tf.add(f, f"KuaiRand-Pure/data/{f.name}")
    return out


def _user_files(cwd: Path) -> None:
    """The files that docs/sources.md's "for files you have" commands name, as small stand-ins in their layouts."""
    import gzip
    import shutil

    (cwd / "Musical_Instruments_5.json.gz").write_bytes(
        gzip.compress((FIXTURES / "amazon" / "Musical_Instruments_5.json").read_bytes()))
    kuai = cwd / "KuaiRand-Pure" / "data"
    kuai.mkdir(parents=True)
    for f in (FIXTURES / "kuairand").iterdir():
        shutil.copy(f, kuai / f.name)
    shutil.copy(FIXTURES / "kuairand" / "log_standard_4_08_to_4_21_pure.csv", kuai / "log_standard_4_22_to_5_08_pure.csv")
    rows = [("u1", "a1", 2008, 1, d) for d in range(1, 8)] + [("u2", "a2", 2008, 1, d) for d in range(2, 9)]
    (cwd / "plays.tsv").write_text("uid\tartist\tyear\tmonth\tday\n" + "".join(f"{u}\t{a}\t{y}\t{m}\t{d}\n" for u, a, y, m, d in rows))
    ratings = [(f"user{u}", f"item{(u * 3 + k) % 7}", 1 + (u + k) % 5, 1_200_000_000 + 86_400 * (u + k)) for u in range(6)
               for k in range(4)]
    (cwd / "ratings.csv").write_text("user_id\titem_id\trating\tts\n" + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory) -> dict:
    """What the docs' commands need on a machine without ../shared or the network: a dataset cache filled from
    the stand-in archives (``simulate data get`` itself is run against them with ``--url file://...``), and a
    working directory holding the files that the docs' tabular examples name."""
    from simulator.sources import datasets

    base = tmp_path_factory.mktemp("docs")
    archives = _stand_ins(base / "downloads")
    cache = base / "cache"
    for name, archive in archives.items():
        datasets.fetch(name, cache, url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    cwd = base / "cwd"
    cwd.mkdir()
    _user_files(cwd)
    return {"archives": archives, "cache": cache, "cwd": cwd, "base": base}


@pytest.mark.parametrize(("doc", "line", "cmd", "sample"), COMMANDS, ids=[f"{d}:{n}" for d, n, _, _ in COMMANDS])
def test_doc_command(doc, line, cmd, sample, doc_env, monkeypatch):
    """Every ``simulate`` command of the docs is validated by ``simulate --dry-run`` (scenario, scale, log and
    options; a real log is read in full; nothing is simulated); ``simulate list`` and ``simulate data list`` run
    and their sample output must be in what they print; ``simulate data get NAME`` runs against a local stand-in
    of the download; a ``python benchmarks/...`` command names a benchmark that takes its options; other tools
    are allowed. The dataset cache and the working directory are :func:`doc_env`'s."""
    import shlex

    from typer.testing import CliRunner

    from simulator.run.cli import app

    where = f"{doc}:{line}: {cmd}"
    args = shlex.split(cmd)
    env = {"COLUMNS": "120", "COLDSIM_DATA_DIR": str(doc_env["cache"])}
    if args[0] == "simulate":
        if re.search(r"<[^<>]+>", cmd):  # a placeholder (e.g. <MLflow parent run id>): check the options exist
            help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
            for a in args[1:]:
                assert not a.startswith("--") or a in help_text, f"{where}: unknown option {a}"
            return
        if any("../shared/" in a for a in args) and not (ROOT.parent / "shared").is_dir():
            pytest.skip(f"{where}: needs ../shared next to the checkout")
        monkeypatch.chdir(ROOT if any("../shared/" in a for a in args) else doc_env["cwd"])
        if args[1:3] == ["data", "get"]:  # download into an empty cache, from the local stand-in
            archive = doc_env["archives"][args[3]]
            env["COLDSIM_DATA_DIR"] = str(doc_env["base"] / f"get-{line}-{args[3]}")
            run = [*args[1:], "--url", archive.as_uri(), "--sha256", hashlib.sha256(archive.read_bytes()).hexdigest()]
        elif args[1:2] in (["list"], ["data"]):
            run = args[1:]
        else:
            run = [*args[1:], "--dry-run"]
        res = CliRunner().invoke(app, run, env=env)
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


def test_doc_command_fails_on_a_wrong_command(doc_env, monkeypatch):
    for cmd, sample in (("simulate --scenario coldstart_ab --scale huge", []), ("simulate --bogus", []),
                        ("simulate list", ["nosuch: a scenario that does not exist"]),
                        ("simulate --log movielens:no-such-dataset", []),
                        ("simulate --log tabular:ratings.csv?no_such_option=1", []),
                        ("python benchmarks/bench_aa.py --no-such-option", []), ("rm -rf /tmp/x", [])):
        with pytest.raises(AssertionError):
            test_doc_command("x.md", 1, cmd, sample, doc_env, monkeypatch)
