"""The results: one JSON document, a Markdown table per fleet, and a chart of polls per job against lag."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tabulate import tabulate

from .figures import percentile

HEADERS: Final = (
    "contender",
    "wall s",
    "ideal s",
    "wall / ideal",
    "creates-as-sent bound s",
    "requests: total (token / create / job / list / other)",
    "polls per job: med / p95 / max",
    "detection lag s: med / p95 / max",
    "lag, share of job: med / p95 / max",
    "CPU s (ms per target)",
    "peak RSS MiB",
    "simulator CPU s (busy)",
    "succeeded / failed / not started",
)
Points = Mapping[str, Sequence[tuple[int, float]]]  # contender -> (polls, lag share) per detected job


def _num(value: float | None, template: str = "{:.1f}") -> str:
    return "-" if value is None else template.format(value)


def _three(spread: Mapping[str, Any], template: str) -> str:
    return " / ".join(_num(spread[key], template) for key in ("median", "p95", "max"))


def _pct(spread: Mapping[str, Any]) -> str:
    return " / ".join("-" if spread[key] is None else f"{spread[key]:.1%}" for key in ("median", "p95", "max"))


def table_row(c: Mapping[str, Any]) -> list[str]:
    """One contender's row; extrapolated figures are marked ≈ and the measured value follows."""
    extrapolated = c["wall_basis"] == "extrapolated"
    wall = (
        f"≈{c['wall_s_headline']:,.1f} (extrapolated; measured {c['wall_s']:,.1f}, capped)"
        if extrapolated
        else (f"{c['wall_s']:,.1f}" + (" (capped)" if c["capped"] else ""))
    )
    ratio = _num(c["wall_over_ideal"], "{:.2f}")
    requests = c["requests"]
    total = f"{requests['total']:,}"
    if c["requests_total_extrapolated"] is not None:
        total += f" (≈{c['requests_total_extrapolated']:,} extrapolated)"
    kinds = " / ".join(f"{requests[k]:,}" for k in ("token", "create", "job", "backups", "other"))
    simulator = c["simulator"]
    busy = simulator["cpu_s_proc"] if simulator["cpu_s_proc"] is not None else simulator["cpu_s"]
    targets = c["targets"]
    return [
        c["contender"] + (f" ({c['workers']} workers)" if c["workers"] and c["workers"] > 1 else ""),
        wall,
        f"{c['ideal_s']:,.1f}",
        ("≈" if extrapolated else "") + ratio,
        _num(c["created_bound_s"]) + (" (its creates only)" if c["capped"] else ""),
        f"{total} ({kinds})",
        _three(c["polls_per_job"], "{:.0f}") + (f" ({c['polls_per_job']['n']} jobs)" if c["capped"] else ""),
        _three(c["detection_lag_s"], "{:.3f}"),
        _pct(c["detection_lag_share"]),
        f"{c['cpu_s']['total']:.2f} ({_num(c['cpu_s']['per_target_ms'], '{:.1f}')})",
        f"{c['peak_rss_mib']:.0f}",
        f"{_num(busy, '{:.2f}')} ({_num(simulator['busy_share'], '{:.0%}')})",
        f"{targets['succeeded']} / {targets['failed']} / {targets['not_started']}"
        + (f" (+{targets['other']} abandoned)" if targets["other"] else ""),
    ]


def run_title(run: Mapping[str, Any]) -> str:
    fleet = run["fleet"]
    stores = "one store" if fleet["stores"] == 1 else f"{fleet['stores']} stores"
    return f"{fleet['deployments']:,} deployments, {stores} each ({fleet['targets']:,} targets)"


def markdown(document: Mapping[str, Any]) -> str:
    machine = document["machine"]
    lines = [
        f"# Fleet benchmark: `{document['scenario']}`",
        "",
        f"{document['date']}; {machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}; "
        f"seed {document['seed']}, time scale {document['scale_text']} (a real minute is "
        f"{60 * document['scale']:g} benchmark seconds); harness wall time {document['harness_wall_s']:,.0f} s.",
        "",
        "Job durations: lognormal, median 15 min, sigma 0.5, clamped to [2 min, 120 min], scaled. Each contender "
        "ran against a fresh simulator (profile `none`, version 11.3) serving the same fleet. "
        "Ideal: the longest deployment's jobs back to back; for W workers max(longest, sum / W). "
        "Creates-as-sent bound: the last job's completion after the contender's start. "
        "Requests, polls and job times are the simulator's records; CPU and peak RSS the contender "
        "process's own (`wait4`). ≈: extrapolated from a capped run (see the JSON's `extrapolation`).",
    ]
    for run in document["runs"]:
        lines += ["", f"## {run_title(run)}", ""]
        lines.append(
            tabulate(
                [table_row(c) for c in run["contenders"]], headers=HEADERS, tablefmt="github", disable_numparse=True
            )
        )
        lines += [f"\n**{e['contender']} failed**: {e['error']}" for e in run.get("errors", [])]
        fleet, jobs = run["fleet"], run["fleet"]["job_duration_s"]
        lines += [
            "",
            f"Job durations (s): median {jobs['median']:.1f}, p95 {jobs['p95']:.1f}, max {jobs['max']:.1f}, "
            f"sum {fleet['job_duration_sum_s']:,.0f}; ideal {fleet['ideal_s']:,.1f} s.",
        ]
    checks = document["issue_targets"]["checks"]
    if checks:
        lines += ["", "## The issue's targets", ""]
        lines += [f"- {_where(c)}: {'met' if c['met'] else '**missed**'}: {c['target']}: {c['by']}" for c in checks]
    return "\n".join(lines) + "\n"


def _where(check: Mapping[str, Any]) -> str:
    """ "10,000 deployments, orchestrator-nightly", or the client benchmark's name alone."""
    fleet = check.get("fleet")
    who = check.get("contender", "orchestrator")
    return f"{fleet:,} deployments, {who}" if fleet else who


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def report_figures(figures: Mapping[str, Any], out: Path) -> None:
    """A benchmark's figures: a Markdown table on stdout, and the JSON at `out`."""
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    write_json(out, figures)
    print(f"\nwritten to {out}")


def chart(path: Path, panels: Sequence[tuple[str, Points]]) -> bool:
    """Polls per job (x) against detection lag as a share of the job's duration (y), one point per job,
    one series per contender, one panel per fleet. False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colours = {
        "orchestrator": "tab:blue",
        "orchestrator-nightly": "tab:purple",
        "sequential": "tab:orange",
        "threadpool": "tab:green",
    }
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
    for axis, (title, points) in zip(axes[0], panels, strict=True):
        for name, pairs in points.items():
            if not pairs:
                continue
            xs = [max(polls, 1) for polls, _ in pairs]
            ys = [max(share, 1e-5) for _, share in pairs]
            colour = colours.get(name, "tab:gray")
            few = len(pairs) < 500
            axis.scatter(xs, ys, s=10 if few else 4, alpha=0.6 if few else 0.15, color=colour, linewidths=0)
            middle_x, middle_y = percentile(xs, 50), percentile(ys, 50)
            axis.scatter([middle_x], [middle_y], s=90, marker="D", color=colour, edgecolors="black", label=name)
        axis.axhline(0.10, color="gray", linestyle="--", linewidth=0.8)
        axis.axvline(8, color="gray", linestyle=":", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("polls per job")
        axis.set_ylabel("detection lag / job duration")
        axis.set_title(title, fontsize=10)
        axis.legend(title="median (◆); one dot per job", fontsize=8, title_fontsize=8, loc="lower left")
    figure.suptitle("Polls per job against detection lag (dashed: 10% lag; dotted: 8 polls)", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
