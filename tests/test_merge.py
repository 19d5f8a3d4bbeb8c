"""`report merge`: one report over several (the shards of a fleet run), its summary counted again from the rows."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.errors import InputError
from orchestrator.merge import audit_summary, merge_reports, merged_document, run_summary
from orchestrator.model import Outcome, RunResult, TargetState
from orchestrator.report import report_document, summarize
from orchestrator.settings import RunSettings
from orchestrator.shard import shard_of
from tests.conftest import make_deployment
from tests.test_cli_run import FAST, Simulator, _simulator

NOW = 1_795_741_200.0


def _target(index: int, name: str, store: str, outcome: Outcome, tags: tuple[str, ...], error: str = "") -> TargetState:
    target = TargetState(index, replace(make_deployment(name), tags=tags), store, f"b-{name}", None)
    target.submitted_at = NOW + index
    target.finish(outcome, NOW + 10 * (index + 1))
    if error:
        target.error_class, target.error = "server", error
    return target


def _document(run_id: str, targets: list[TargetState], shard: str | None = None) -> dict[str, Any]:
    settings = RunSettings(shard=shard)
    return report_document(RunResult(run_id, NOW, NOW + 100, targets, settings, "fleet.toml"))


def _targets() -> tuple[list[TargetState], list[TargetState]]:
    first = [
        _target(0, "gis-a", "default", Outcome.SUCCEEDED, ("eu",)),
        _target(1, "gis-a", "raster", Outcome.FAILED, ("eu",), "disk full"),
        _target(2, "gis-b", "default", Outcome.TIMED_OUT, ("us",)),
    ]
    second = [
        _target(0, "gis-c", "default", Outcome.FAILED, ("eu", "prod"), "disk full"),
        _target(1, "gis-d", "default", Outcome.SUCCEEDED, ("us",)),
        _target(2, "gis-e", "default", Outcome.FAILED, ("us",), "token expired"),
    ]
    return first, second


def test_the_summary_is_counted_again_from_the_rows() -> None:
    """The rows' summary is `summarize`'s own; merged counts are the sums, equal reasons are one entry."""
    first, second = _targets()
    for targets in (first, second, first + second):
        assert run_summary(_document("r", targets)["targets"]) == summarize(targets)
    merged = merged_document([(Path("a"), _document("r1", first, "0/2")), (Path("b"), _document("r2", second, "1/2"))],
                             "merged-x")  # fmt: skip
    summary = merged["summary"]
    assert summary["total"] == 6 and summary["succeeded"] == 2 and summary["failed"] == 3
    assert summary["by_tag"] == {"eu": {"succeeded": 1, "failed": 2}, "prod": {"failed": 1},
                                 "us": {"succeeded": 1, "failed": 1, "timed_out": 1}}  # fmt: skip
    disk = next(f for f in summary["failures_by_reason"] if f["reason"] == "disk full")
    assert disk["count"] == 2 and disk["targets"] == ["gis-a/raster", "gis-c/default"]
    assert merged["verdict"].startswith("2 of 6 backed up")
    assert [s["shard"] for s in merged["merged_from"]] == ["0/2", "1/2"] and "shard" not in merged["settings"]


def test_shards_are_merged_in_shard_order_whatever_the_order_given() -> None:
    first, second = _targets()
    merged = merged_document([(Path("b"), _document("r2", second, "1/2")), (Path("a"), _document("r1", first, "0/2"))],
                             "m")  # fmt: skip
    assert [r["deployment"] for r in merged["targets"]][:3] == ["gis-a", "gis-a", "gis-b"]


def test_the_audit_summary_from_rows_has_summarizes_shape() -> None:
    rows: list[dict[str, Any]] = [
        {"verdict": "compliant", "violations": [], "tags": ["eu"]},
        {"verdict": "violation", "violations": [{"control": "recent", "reason": "old"}], "tags": ["eu"]},
    ]
    summary = audit_summary(rows)
    assert summary["targets"] == 2 and summary["compliant"] == 1 and summary["violation"] == 1
    assert summary["by_control"]["recent"] == 1 and summary["by_tag"] == {"eu": {"compliant": 1, "violation": 1,
                                                                                  "unknown": 0}}  # fmt: skip


@pytest.mark.parametrize(
    ("shards", "says"),
    [
        (("0/3", "1/3"), "shard(s) 2/3 missing"),
        (("0/2", "1/3"), "different counts"),
        (("0/2", "0/2"), "shard 0/2 is given twice"),
        (("0/2", None), "some reports are of a shard and these are not"),
    ],
)
def test_shards_missing_twice_or_mixed_are_refused(shards: tuple[str | None, str | None], says: str) -> None:
    first, second = _targets()
    reports = [(Path("a"), _document("r1", first, shards[0])), (Path("b"), _document("r2", second, shards[1]))]
    with pytest.raises(InputError, match=re.escape(says)):
        merged_document(reports, "m")


def test_a_target_twice_and_different_kinds_are_refused() -> None:
    first, _ = _targets()
    with pytest.raises(InputError, match="gis-a/default is in both a and b"):
        merged_document([(Path("a"), _document("r1", first)), (Path("b"), _document("r2", first[:1]))], "m")
    audit = {"kind": "audit", "audit_id": "x", "targets": []}
    with pytest.raises(InputError, match=r"different kinds \(audit, run\)"):
        merged_document([(Path("a"), _document("r1", first)), (Path("b"), audit)], "m")


def test_a_folder_without_a_report_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no report\.json, compliance\.json nor latest\.json"):
        merge_reports([tmp_path], tmp_path, now=NOW, rng=random.Random(1))


@pytest.fixture
def six(tmp_path: Path) -> Iterator[Simulator]:
    """Six simulated deployments: gis-0000..gis-0005, three in each shard of 2."""
    yield from _simulator(tmp_path, "--deployments", "6", "--job-seconds", "0.2")


def test_two_shard_runs_merge_into_one_report(
    six: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real runs, --shard 0/2 and 1/2, each with its report folder; `report merge` over the folders."""
    names = [f"gis-{i:04d}" for i in range(6)]
    for k in (0, 1):
        args = ["run", "--inventory", str(six.inventory), "--report-dir", str(tmp_path / f"s{k}"), "--shard", f"{k}/2"]
        assert main([*args, "--quiet", *FAST]) == 0
        latest = json.loads((tmp_path / f"s{k}" / "latest.json").read_text())
        document = json.loads((tmp_path / f"s{k}" / latest["folder"] / "report.json").read_text())
        assert document["settings"]["shard"] == f"{k}/2"
        assert [r["deployment"] for r in document["targets"]] == [n for n in names if shard_of(n, 2) == k]
    capsys.readouterr()
    merged_dir = tmp_path / "merged"
    assert main(["report", "merge", str(tmp_path / "s1"), str(tmp_path / "s0"), "--report-dir", str(merged_dir)]) == 0
    (folder,) = merged_dir.iterdir()
    assert folder.name.startswith("merged-")
    assert {p.name for p in folder.iterdir()} == {f"report.{x}" for x in ("json", "csv", "md", "html", "junit.xml")}
    document = json.loads((folder / "report.json").read_text())
    assert document["summary"]["total"] == document["summary"]["succeeded"] == 6
    assert sorted(r["deployment"] for r in document["targets"]) == names
    assert "6 of 6 backed up" in capsys.readouterr().out
    assert main(["report", "merge", str(tmp_path / "s0"), "--report-dir", str(merged_dir)]) == 2
    assert "shard(s) 1/2 missing" in capsys.readouterr().err


def test_two_shard_audits_merge_into_one_compliance_report(six: Simulator, tmp_path: Path) -> None:
    """`audit --shard K/N` records its shard in compliance.json; `report merge` over the audit folders."""
    folders = []
    for k in (0, 1):
        args = [
            "audit",
            "--inventory",
            str(six.inventory),
            "--report-dir",
            str(tmp_path / f"a{k}"),
            "--shard",
            f"{k}/2",
        ]
        main([*args, "--quiet", "--retry-initial", "0.05", "--request-timeout", "3"])
        (folder,) = (tmp_path / f"a{k}").glob("audit-*")
        assert json.loads((folder / "compliance.json").read_text())["shard"] == f"{k}/2"
        folders.append(str(folder))
    main(["report", "merge", *folders, "--report-dir", str(tmp_path / "m")])
    (folder,) = (tmp_path / "m").iterdir()
    document = json.loads((folder / "compliance.json").read_text())
    assert document["kind"] == "audit" and document["summary"]["targets"] == 6
    assert {p.name for p in folder.iterdir()} == {f"compliance.{x}" for x in ("json", "csv", "md", "html", "junit.xml")}
    assert main(["report", "merge", folders[0], str(tmp_path / "s-none")]) == 2  # not a report folder


def test_an_empty_shard_says_so_and_exits_0(six: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shard the selection leaves empty writes an empty report (so a merge finds every shard) and exits 0."""
    other = 1 - shard_of("gis-0000", 2)
    args = ["run", "--inventory", str(six.inventory), "--select", "name=gis-0000", "--shard", f"{other}/2"]
    assert main([*args, "--report-dir", str(tmp_path / "r"), "--quiet", *FAST]) == 0
    assert f"shard {other}/2 has no deployment (of the 1 selected)" in capsys.readouterr().err


def test_report_run_id_still_works(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`report RUN_ID` is unchanged by `report merge`: a run id the ledger lacks is refused as before."""
    assert main(["report", "nosuchrun", "--report-dir", str(tmp_path)]) == 2
