"""docs/serving.md runs: its server command starts a server, and its curl commands, run in order against it, get
the status codes (and, for errors, the messages) the doc shows."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "serving.md"
BASH = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHOWN = re.compile(r"^# -> (\d{3})(?: (.*))?$")
DOC_PORT = "8765"


def doc_examples(text: str) -> tuple[str, list[tuple[str, int, str | None]]]:
    """The server command, and each curl command with the status and body shown under it (``# -> 200 {...}``)."""
    server, calls = None, []
    for block in BASH.findall(text):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("python -m serving.http"):
                server = line
            elif line.startswith("curl "):
                shown = SHOWN.match(lines[i + 1]) if i + 1 < len(lines) else None
                assert shown, f"docs/serving.md: no '# -> STATUS' line under {line}"
                calls.append((line, int(shown.group(1)), shown.group(2)))
    assert server, "docs/serving.md: no 'python -m serving.http' command"
    return server, calls


def test_extractor():
    text = "```bash\npython -m serving.http --port 8765\n```\n```bash\ncurl -s x\n# -> 200 {}\ncurl -s y\n# -> 404\n```\n"
    assert doc_examples(text) == ("python -m serving.http --port 8765", [("curl -s x", 200, "{}"), ("curl -s y", 404, None)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_shape(shown: str, body: bytes, where: str) -> None:
    """Error bodies must be what the doc shows; other bodies the same top-level fields (scores are shortened)."""
    try:
        expected = json.loads(shown)
    except json.JSONDecodeError:
        return  # an abbreviated body ({"openapi": "3.1.0", ...})
    got = json.loads(body)
    if "detail" in expected:
        assert got == expected, f"{where}: the doc shows\n{shown}\nthe server says\n{body.decode()}"
    else:
        assert set(got) == set(expected), f"{where}: fields {sorted(got)}, the doc shows {sorted(expected)}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_doc_commands_run_against_a_local_server(tmp_path):
    server, calls = doc_examples(DOC.read_text())
    port = str(_free_port())
    args = shlex.split(server.replace(DOC_PORT, port))
    assert args[:3] == ["python", "-m", "serving.http"]
    proc = subprocess.Popen([sys.executable, *args[1:]], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while subprocess.run(["curl", "-s", "-o", "/dev/null", f"{base}/healthz"]).returncode != 0:
            assert proc.poll() is None, f"the server exited: {proc.stdout.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.5)
        for cmd, status, shown in calls:
            out = tmp_path / "body"
            argv = shlex.split(cmd.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{port}"))
            res = subprocess.run([*argv, "-o", str(out), "-w", "%{http_code}"], capture_output=True, timeout=60)
            assert res.returncode == 0, f"{cmd}: curl exit {res.returncode} {res.stderr.decode()}"
            assert int(res.stdout) == status, f"{cmd}: {res.stdout.decode()} {out.read_bytes()[:500]!r}"
            if shown:
                _same_shape(shown, out.read_bytes(), cmd)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
