"""Small things that add up (issue 14): `--version`, and the demo saying where its own ledger is."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from orchestrator.cli import main


def test_version_is_the_installed_package_version() -> None:
    """`orchestrator --version` prints pyproject's version (as installed) and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"orchestrator {version('arcgis-fleet-orchestrator')}\n"


def test_the_demo_ends_saying_how_to_list_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo keeps its own ledger: its last lines name it and the `runs` command that lists it, which does."""
    monkeypatch.chdir(tmp_path)
    demo = ["demo", "--deployments", "1", "--profile", "none", "--seed", "1", "--quiet", "--report-dir", "out"]
    assert main(demo) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    ledger = Path("out") / "demo-ledger.sqlite3"
    assert f"a ledger of their own, {ledger}, so `orchestrator runs` does not list them" in last
    command = last.rpartition("`orchestrator ")[2].partition("`")[0]
    assert command == f"runs --ledger {ledger}"
    assert main(command.split()) == 0
    listed = capsys.readouterr().out
    assert " demo " in listed and "demo:1:none" in listed
