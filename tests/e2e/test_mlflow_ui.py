"""The MLflow UI as a new user sees it after a run, in headless Chromium (benchmarks/check_mlflow_ui.py): skipped
where the machine has no Chromium (this test does not install it; the script does)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no Chromium on this machine: `apt-get install chromium`, or run "
                           "`python benchmarks/check_mlflow_ui.py`, which installs it")
def test_runs_table_and_the_answer_on_the_parent_run_page(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import check_mlflow_ui

    assert check_mlflow_ui.main(["--no-install", "--out", str(tmp_path)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert out.count("PASS") == 6 and "FAIL" not in out
    assert (tmp_path / "mlflow_runs.png").stat().st_size > 10_000
