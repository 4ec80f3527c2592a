"""What a new user sees in `mlflow ui` after a run, checked in a real browser (headless Chromium).

Makes a tiny `coldstart_ab` run (in process; or reads ``--tracking-uri``), starts `mlflow ui` on 127.0.0.1, loads the
URLs `simulate` prints, the experiment's runs view and the parent run's page, in headless Chromium (Debian's
`chromium`; installed with apt-get where missing unless ``--no-install``), and checks that:
  * the runs view is the runs table (not MLflow's GenAI overview) and lists the parent run with its child runs,
  * the parent run's page lists the child runs and shows the description with the answer and the headline table.
Screenshots go to ``--out`` (docs/images/ by default: mlflow_runs.png, mlflow_run.png). Prints one line per check;
exits 1 if one fails, 0 with a message when no browser can be had (nothing checked).

Run: ``python benchmarks/check_mlflow_ui.py`` (about a minute once Chromium is installed).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""What runs Chromium headless on a machine with no network beyond loopback (without the background-networking
flags it keeps trying to reach Google's hosts)."""


def find_chromium(install: bool) -> str | None:
    """The Chromium binary, installed with apt-get when missing and ``install``; None when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if install and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900)
        return shutil.which("chromium")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_run(tracking_uri: str, run_root: str) -> str:
    """A tiny coldstart_ab run recorded at ``tracking_uri``; its parent run id."""
    sys.path.insert(0, str(ROOT))
    from scenarios import get_scenario
    from simulator.run.session import RunOptions, run_scenario

    out = run_scenario(get_scenario("coldstart_ab"), RunOptions(scenario="coldstart_ab", scale="tiny", days=2,
                                                                runtime="local", run_root=run_root),
                       tracking_uri=tracking_uri)
    return out.parent_run_id


def page_text(chromium: str, url: str, profile: Path, screenshot: Path | None = None, height: int = 1000) -> str:
    """The page's text once its scripts have run (Chromium's --dump-dom), and a screenshot of it."""
    base = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size=1500,{height}", "--virtual-time-budget=25000"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="a store with a coldstart_ab run (default: make a tiny one)")
    p.add_argument("--run-id", default=None, help="its parent run (default: the newest coldstart_ab run)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the screenshots go")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install chromium when it is missing")
    a = p.parse_args(argv)
    chromium = find_chromium(not a.no_install)
    if chromium is None:
        print("skipped: no Chromium on this machine and it could not be installed (apt-get install chromium)")
        return 0
    from mlflow import MlflowClient

    from simulator.run.tracking_names import experiment_url, run_url

    with tempfile.TemporaryDirectory(prefix="coldsim-ui-") as tmp:
        uri = a.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        run_id = a.run_id or (tiny_run(uri, f"{tmp}/runs") if a.tracking_uri is None else None)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("coldsim")
        if run_id is None:
            run_id = client.search_runs([exp.experiment_id], "attributes.run_name = 'coldstart_ab'",
                                        order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id
        parent = client.get_run(run_id)
        children = sorted(r.info.run_name for r in client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                                   "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, cwd=tmp, env={**os.environ, "MLFLOW_HOST": "127.0.0.1"})
        try:
            ui = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(ui, timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        print("FAIL: mlflow ui did not answer in 120 s")
                        return 1
                    time.sleep(1)
            profile = Path(tmp) / "chromium"
            runs = page_text(chromium, experiment_url(exp.experiment_id, ui), profile, a.out / "mlflow_runs.png")
            page = page_text(chromium, run_url(exp.experiment_id, run_id, ui), profile, a.out / "mlflow_run.png", 1400)
        finally:
            server.terminate()
            server.wait(timeout=30)
    note = parent.data.tags.get("mlflow.note.content", "")
    checks = [
        ("the experiment opens on the runs table, not the GenAI overview", "Run Name" in runs and "detect issues" not in runs.lower()),
        ("the runs table lists the parent run", parent.info.run_name in runs),
        (f"the runs table counts the parent and its {len(children)} child runs",
         f"{len(children) + 1} matching runs" in runs),
        ("the parent run's page lists its child runs", all(name in page for name in children)),
        ("the page shows the description with the answer", "Description" in page and "Answer" in page),
        ("the description holds the headline table", "lift [95% CI]" in page and "lift [95% CI]" in note),
    ]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    print(f"screenshots: {a.out / 'mlflow_runs.png'}, {a.out / 'mlflow_run.png'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
