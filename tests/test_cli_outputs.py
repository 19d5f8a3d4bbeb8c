"""What a run and an audit leave for the morning, through the command line: the HTML and JUnit files beside
the reports, the Prometheus metrics file, and the notification; a notify URL that cannot work is bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.cli import main
from tests.test_cli_run import FAST, Simulator, simulator  # noqa: F401  (the fixture)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_a_run_leaves_html_junit_metrics_and_a_notification(
    simulator: Simulator,  # noqa: F811
    receiver: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, received = receiver
    metrics = tmp_path / "backup.prom"
    args = ["run", "--inventory", str(simulator.inventory), "--report-dir", str(tmp_path / "r"), "--quiet",
            "--metrics-file", str(metrics), "--notify", url, "--notify-on", "always", *FAST]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = Path(out.split("report: ")[1].split()[0]).parent
    assert {"report.html", "report.junit.xml"} <= {p.name for p in folder.iterdir()}
    values = metrics_of(metrics)
    assert values[("arcgis_backup_targets", (("kind", "run"), ("outcome", "succeeded")))] == 4
    assert sum(1 for name, _ in values if name == "arcgis_backup_last_success_timestamp_seconds") == 4
    (message,) = received
    assert "4 targets succeeded" in message["title"] and str(folder) in message["message"]


def test_an_audit_leaves_its_metrics_and_notifies_on_failure_only(
    simulator: Simulator,  # noqa: F811
    receiver: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, received = receiver
    metrics = tmp_path / "audit.prom"
    args = ["audit", "--inventory", str(simulator.inventory), "--report-dir", str(tmp_path / "r"), "--quiet",
            "--metrics-file", str(metrics), "--notify", url]  # fmt: skip
    assert main(args) == 1  # nothing backed up yet: every target in violation, and the notification goes out
    values = metrics_of(metrics)
    assert sum(v for (name, labels), v in values.items() if name == "arcgis_backup_compliance"
               and ("verdict", "violation") in labels) == 4  # fmt: skip
    (message,) = received
    assert "0 of 4" in message["title"]


def test_a_notify_url_that_cannot_work_is_refused_before_anything_is_sent(
    simulator: Simulator,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = simulator.stats()["requests"]
    args = ["run", "--inventory", str(simulator.inventory), "--report-dir", str(tmp_path), "--notify", "nosuch://x"]
    assert main(args) == 2
    assert "--notify URL 1 of 1" in capsys.readouterr().err
    assert simulator.stats()["requests"] == before
