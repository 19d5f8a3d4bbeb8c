"""The HTML reports: report.html beside a run's report.json, compliance.html beside an audit's compliance.json.

Each is one self-contained file that opens from a mail attachment or an artifact store: its CSS and script
are inline, its charts are inline SVG drawn here, and nothing on the page asks the network for anything
(its Content-Security-Policy allows no source at all but the page's own style and script, by hash).

Each is made from the same document the JSON report is (`report.report_document`,
`audit.report.compliance_document`): counts come from its `summary`, rows from its `targets`; what is
drawn is only laid out here (bar lengths, histogram bins, time buckets), never counted a second way.

Every string in a document is untrusted (deployment and backup names, server error texts): the templates
are rendered with autoescaping on and nothing from a document is ever marked safe. Data the script reads
goes in a `<script type="application/json">` block through Jinja's `tojson`, which escapes `<`, `>`, `&`
and `'`. Each chart element carries data attributes (`data-count`, ...) saying what it stands for.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from orchestrator.model import Outcome

OUTCOMES: Final = tuple(o.value for o in Outcome if o is not Outcome.PENDING)
VERDICTS: Final = ("compliant", "violation", "unknown")
# Chart geometry, in SVG user units (the SVG scales to the page's width).
WIDTH: Final = 720
WIDE: Final = 1200  # a chart across the page
LABEL_W: Final = 170  # the row labels of a horizontal bar chart
ROW_H: Final = 22
BAR_H: Final = 16
PLOT_H: Final = 180  # the plot area of a vertical bar chart
TOP: Final = 16  # room above it for the tallest bar's count
MAX_ROWS: Final = 40  # rows of a horizontal bar chart; the rest are in the JSON report
MAX_LISTED: Final = 100  # violations of one control listed with their fix; all are in the table of every target
HISTOGRAM_BINS: Final = 12
MIN_BIN: Final = 0.001
TIME_BUCKETS: Final = 30
# The table's columns whose cells sort as numbers; every other column sorts as text (ISO times sort so too).
NUMERIC: Final = frozenset({"attempts", "polls", "duration_s", "age_hours", "good_backups", "days_covered"})
# The run table's first columns (the rest follow in the report's order; the URL is in report.json and .csv).
RUN_FIRST: Final = ("deployment", "store", "outcome", "error_class", "error", "duration_s")
_CSS: Final = {"error": "reason", "violations": "reason", "server_status": "reason"}  # cells that wrap
AUDIT_TABLE: Final = (
    "deployment",
    "store",
    "tags",
    "verdict",
    "violations",
    "error",
    "current_release",
    "last_good_backup",
    "age_hours",
    "last_good_release",
    "good_backups",
    "days_covered",
    "newest_backup_status",
    "newest_backup_at",
)


@dataclass(frozen=True, slots=True)
class Rect:
    """One bar, or one segment of a stacked bar: `data` holds its data attributes (what it stands for)."""

    x: float
    y: float
    width: float
    height: float
    css: str
    title: str
    data: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = "label"


@dataclass(frozen=True, slots=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG chart laid out in user units; the template draws it as it is."""

    name: str  # data-chart: how a test finds it
    title: str  # the SVG's accessible name
    height: float
    rects: tuple[Rect, ...] = ()
    texts: tuple[Text, ...] = ()
    lines: tuple[Line, ...] = ()
    points: str = ""  # a polyline's points, if any
    legend: tuple[str, ...] = ()  # the series drawn, in order (their CSS class is `s-<series>`)
    width: float = WIDTH

    @property
    def empty(self) -> bool:
        return not self.rects


# --- Layouts: pure functions from a document's figures to a chart ----------------------------------------------


def stacked_rows(name: str, title: str, rows: list[tuple[str, Mapping[str, int]]], series: tuple[str, ...]) -> Chart:
    """A horizontal stacked bar per row (a tag): one segment per series with a count, lengths to scale. Rows
    past `MAX_ROWS` are left out (the caller says so)."""
    rows = rows[:MAX_ROWS]
    plot = WIDTH - LABEL_W - 60
    top = max((sum(counts.values()) for _, counts in rows), default=0) or 1
    rects, texts = [], []
    for index, (label, counts) in enumerate(rows):
        y = 4 + index * ROW_H
        x = float(LABEL_W)
        texts.append(Text(LABEL_W - 8, y + BAR_H - 4, _clip(label, 24), "end"))
        for kind in series:
            count = counts.get(kind, 0)
            if not count:
                continue
            width = plot * count / top
            data = {"data-row": label, "data-series": kind, "data-count": str(count)}
            rects.append(Rect(x, y, width, BAR_H, f"s-{kind}", f"{label}: {count} {kind}", data))
            x += width
        texts.append(Text(x + 6, y + BAR_H - 4, str(sum(counts.values())), css="value"))
    used = tuple(kind for kind in series if any(counts.get(kind) for _, counts in rows))
    return Chart(name, title, 8 + len(rows) * ROW_H, tuple(rects), tuple(texts), legend=used)


def histogram(name: str, title: str, values: list[float], unit: str) -> Chart:
    """Vertical bars of how many values fall in each bin [start, end), bins of a round width."""
    if not values:
        return Chart(name, title, 0)
    low, high = min(values), max(values)
    width = nice_step((high - low) / HISTOGRAM_BINS) if high > low else nice_step(max(abs(high), 1.0) / 10)
    width = max(width, MIN_BIN)  # no finer than the numbers are shown (three decimals), or edges would repeat
    first = math.floor(low / width)
    bins = math.floor(high / width) - first + 1
    counts = Counter(min(max(math.floor(v / width) - first, 0), bins - 1) for v in values)
    starts = [round((first + i) * width, 9) for i in range(bins + 1)]
    bars = [(f"{_num(starts[i])} to {_num(starts[i + 1])} {unit}", counts.get(i, 0)) for i in range(bins)]
    data = [{"data-start": _num(starts[i]), "data-end": _num(starts[i + 1])} for i in range(bins)]
    edges = [f"{_num(s)}" for s in starts]
    return _columns(name, title, bars, data, edges, "bin", unit)


def _columns(
    name: str,
    title: str,
    bars: list[tuple[str, int]],
    data: list[dict[str, str]],
    edges: list[str],
    css: str,
    unit: str,
) -> Chart:
    """Vertical bars side by side with a count axis, labelled under each bar or at the edges between them
    (every few, when crowded)."""
    left, plot_w = 40.0, WIDTH - 60.0
    top = max((count for _, count in bars), default=0) or 1
    step = plot_w / len(bars)
    rects, texts, lines = [], [], [Line(left, TOP + PLOT_H, left + plot_w, TOP + PLOT_H, "axis")]
    for index, ((label, count), extra) in enumerate(zip(bars, data, strict=True)):
        height = PLOT_H * count / top
        x, y = left + index * step, TOP + PLOT_H - height
        rects.append(
            Rect(
                x + 1, y, max(step - 2, 1), height, f"s-{css}", f"{label}: {count}", {**extra, "data-count": str(count)}
            )
        )
        if count:
            texts.append(Text(x + step / 2, y - 3, str(count), "middle", "value"))
    every = max(1, math.ceil(len(edges) / 10))
    middle = step / 2 if len(edges) == len(bars) else 0.0  # a label per bar, or one at each edge between bars
    for index, edge in enumerate(edges):
        if index % every == 0 or index == len(edges) - 1:
            texts.append(Text(left + index * step + middle, TOP + PLOT_H + 16, edge, "middle"))
    texts.append(Text(left + plot_w, TOP + PLOT_H + 32, unit, "end", "unit"))
    texts.append(Text(left - 6, TOP + 4, str(top), "end", "unit"))
    return Chart(name, title, TOP + PLOT_H + 38, tuple(rects), tuple(texts), tuple(lines))


def timeline(name: str, title: str, rows: list[dict[str, Any]], started: str, finished: str) -> Chart:
    """Targets finished in each slice of the run, stacked by outcome, and a line of the jobs under way (from
    their first create to their end) at each slice's middle. Times are the report's, to the second."""
    spans = [(_epoch(r["submitted_at"]), _epoch(r["finished_at"]), r["outcome"]) for r in rows]
    ends = [(s, f, o) for s, f, o in spans if f is not None]
    begin = _epoch(started)
    if begin is None or not ends:
        return Chart(name, title, 0)
    last = max([_epoch(finished) or begin, *(f for _, f, _ in ends)])
    slice_s = max(1.0, nice_step((last - begin) / TIME_BUCKETS))
    buckets = math.floor((last - begin) / slice_s) + 1
    finished_in: list[Counter[str]] = [Counter() for _ in range(buckets)]
    for _, end, outcome in ends:
        finished_in[min(max(math.floor((end - begin) / slice_s), 0), buckets - 1)][outcome] += 1
    left, plot_w = 40.0, WIDE - 60.0
    step = plot_w / buckets
    running = [
        sum(1 for s, f, _ in spans if s is not None and s <= begin + (i + 0.5) * slice_s < (f or math.inf))
        for i in range(buckets)
    ]
    top = max([*(sum(c.values()) for c in finished_in), *running]) or 1
    rects, texts = [], []
    for index, counts in enumerate(finished_in):
        y = float(TOP + PLOT_H)
        for outcome in OUTCOMES:
            count = counts.get(outcome, 0)
            if not count:
                continue
            height = PLOT_H * count / top
            y -= height
            offset = f"+{_num(index * slice_s)} to {_num((index + 1) * slice_s)} s"
            data = {
                "data-start-s": _num(index * slice_s),
                "data-end-s": _num((index + 1) * slice_s),
                "data-series": outcome,
                "data-count": str(count),
            }
            rects.append(
                Rect(
                    left + index * step + 1,
                    y,
                    max(step - 2, 1),
                    height,
                    f"s-{outcome}",
                    f"{offset}: {count} {outcome}",
                    data,
                )
            )
    points = " ".join(
        f"{left + (i + 0.5) * step:.1f},{TOP + PLOT_H - PLOT_H * n / top:.1f}" for i, n in enumerate(running)
    )
    every = max(1, math.ceil(buckets / 8))
    for index in range(0, buckets + 1, every):
        texts.append(Text(left + index * step, TOP + PLOT_H + 16, f"+{_num(index * slice_s)} s", "middle"))
    texts.append(Text(left - 6, TOP + 4, str(top), "end", "unit"))
    legend = tuple(o for o in OUTCOMES if any(c.get(o) for c in finished_in))
    axis = (Line(left, TOP + PLOT_H, left + plot_w, TOP + PLOT_H, "axis"),)
    return Chart(name, title, TOP + PLOT_H + 26, tuple(rects), tuple(texts), axis, points, (*legend, "running"), WIDE)


def age_bars(name: str, title: str, rows: list[dict[str, Any]], limit_of: Callable[[dict[str, Any]], float]) -> Chart:
    """One bar per target: the age of its newest good backup against its policy's `max_age_hours` (a mark on
    each bar). The targets furthest over their limit first (none at all first of all); at most `MAX_ROWS`."""
    judged = with_age(rows)

    def lateness(r: dict[str, Any]) -> float:
        return math.inf if r["age_hours"] is None else r["age_hours"] / limit_of(r)

    shown_rows = sorted(judged, key=lateness, reverse=True)[:MAX_ROWS]
    if not shown_rows:
        return Chart(name, title, 0)
    limits = [limit_of(r) for r in shown_rows]
    ages = [r["age_hours"] for r in shown_rows if r["age_hours"] is not None]
    scale = min(max([*ages, *limits]), 3 * max(limits)) * 1.05  # one years-old backup does not flatten the rest
    plot = WIDE - LABEL_W - 70
    rects, texts, lines = [], [], []
    for index, (r, limit) in enumerate(zip(shown_rows, limits, strict=True)):
        y = 4 + index * ROW_H
        label = f"{r['deployment']}/{r['store']}"
        age = r["age_hours"]
        length = plot if age is None else plot * min(age, scale) / scale
        over = age is None or age > limit
        data = {
            "data-deployment": str(r["deployment"]),
            "data-store": str(r["store"]),
            "data-verdict": r["verdict"],
            "data-age-hours": "" if age is None else _num(age),
            "data-max-age-hours": _num(limit),
        }
        said = "no good backup" if age is None else f"{_num(age)} h old"
        css = "s-none" if age is None else "s-over" if over else "s-within"
        rects.append(Rect(LABEL_W, y, max(length, 1), BAR_H, css, f"{label}: {said} (policy: {_num(limit)} h)", data))
        mark = LABEL_W + plot * min(limit, scale) / scale
        lines.append(Line(mark, y - 2, mark, y + BAR_H + 2, "limit", {"data-max-age-hours": _num(limit)}))
        texts.append(Text(LABEL_W - 8, y + BAR_H - 4, _clip(label, 24), "end"))
        texts.append(
            Text(LABEL_W + length + 6, y + BAR_H - 4, "none" if age is None else f"{_num(age)} h", css="value")
        )
    return Chart(
        name,
        title,
        8 + len(shown_rows) * ROW_H,
        tuple(rects),
        tuple(texts),
        tuple(lines),
        legend=("within", "over", "none", "limit"),
        width=WIDE,
    )


def with_age(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets the age chart can draw: those read, whether or not they have a good backup."""
    return [r for r in rows if r["verdict"] != "unknown" or r["age_hours"] is not None]


def nice_step(raw: float) -> float:
    """The round number (1, 2 or 5 times a power of ten) at least `raw`: bin widths a person reads. Pure."""
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


# --- The two pages -------------------------------------------------------------------------------------------------


def run_html(document: dict[str, Any]) -> str:
    """report.html for a run, retry, demo or snapshot document (`report.report_document`)."""
    summary, rows = document["summary"], document["targets"]
    durations = [r["duration_s"] for r in rows if r["outcome"] == "succeeded" and r["duration_s"] is not None]
    by_tag = list(summary["by_tag"].items())
    charts = [
        stacked_rows("outcomes-by-tag", "Outcomes by tag", by_tag, OUTCOMES),
        histogram("durations", "Duration of the succeeded targets' jobs", durations, "s"),
        timeline("timeline", "The run over time", rows, document["started_at"], document["finished_at"]),
    ]
    present = list(rows[0]) if rows else []
    columns = [c for c in RUN_FIRST if c in present] + [c for c in present if c not in RUN_FIRST and c != "url"]
    snapshot = document["kind"] == "snapshot"
    title = "Pre-upgrade snapshot" if snapshot else {"retry": "Retry", "demo": "Demo run"}.get(document["kind"], "Run")
    return _render(
        "run.html.j2",
        document=document,
        title=f"{title} {document['run_id']}",
        verdict=document["verdict"],
        readiness_line=readiness_line(document.get("readiness")),
        good=summary["succeeded"] == summary["total"] and not document.get("readiness", {}).get("not_ready"),
        outcomes=OUTCOMES,
        charts={c.name: c for c in charts},
        tags_left_out=max(len(by_tag) - MAX_ROWS, 0),
        duration_count=len(durations),
        columns=columns,
        numeric=NUMERIC,
        rows=table_rows(rows, columns, "outcome"),
        filter_column="outcome",
        filter_values=[(o, summary[o]) for o in OUTCOMES],
        data={"kind": document["kind"], "id": document["run_id"], "summary": summary, "total": summary["total"]},
    )


def compliance_html(document: dict[str, Any], *, verdict: str, fix: Callable[[str, str], str]) -> str:
    """compliance.html for an audit document (`audit.report.compliance_document`); `verdict` is its line,
    `fix(control, deployment)` what fixes a violation (the audit's report says both: `audit.report.page`)."""
    summary, rows, policy = document["summary"], document["targets"], document["policy"]
    limit_of, limits_said = max_age_of(policy)
    by_tag = list(summary["by_tag"].items())
    covered = [r["days_covered"] for r in rows if r["days_covered"] is not None]
    window = max([int(policy.get("defaults", {}).get("window_days", 7)), *covered])
    days = Counter(covered)
    day_bars = [(f"{d} days", days.get(d, 0)) for d in range(window + 1)]
    charts = [
        age_bars("age", "Age of each target's newest good backup against its policy", rows, limit_of),
        stacked_rows("verdicts-by-tag", "Verdicts by tag", by_tag, VERDICTS),
        _columns(
            "days-covered",
            f"Days of the last {window} with a good backup",
            day_bars,
            [{"data-days": str(d)} for d in range(window + 1)],
            [str(d) for d in range(window + 1)],
            "bin",
            "days covered",
        ),
    ]
    violations: dict[str, list[tuple[dict[str, Any], str, str]]] = {}
    for r in rows:
        for v in r["violations"]:
            violations.setdefault(v["control"], []).append((r, v["reason"], fix(v["control"], r["deployment"])))
    order = list(summary["by_control"])
    columns = [c for c in AUDIT_TABLE if c in (rows[0] if rows else {})]
    return _render(
        "audit.html.j2",
        document=document,
        title=f"Compliance audit {document['audit_id']}",
        verdict=verdict,
        good=summary["compliant"] == summary["targets"],
        verdicts=VERDICTS,
        charts={c.name: c for c in charts},
        limits_said=limits_said,
        judged=len(with_age(rows)),
        tags_left_out=max(len(by_tag) - MAX_ROWS, 0),
        not_covered=len(rows) - len(covered),
        max_listed=MAX_LISTED,
        violations=sorted(violations.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99),
        unknown=[r for r in rows if r["verdict"] == "unknown"],
        columns=columns,
        numeric=NUMERIC,
        rows=table_rows(rows, columns, "verdict"),
        filter_column="verdict",
        filter_values=[(v, summary[v]) for v in VERDICTS],
        data={"kind": "audit", "id": document["audit_id"], "summary": summary, "total": summary["targets"]},
    )


def readiness_line(readiness: Mapping[str, Any] | None) -> str:
    """A snapshot's answer in one line: how many deployments may be upgraded now."""
    if readiness is None:
        return ""
    total = readiness["ready"] + readiness["not_ready"]
    rest = f"; {readiness['not_ready']} not ready" if readiness["not_ready"] else ""
    return f"{readiness['ready']} of {total} deployments ready for the upgrade{rest}."


def max_age_of(policy: Mapping[str, Any]) -> tuple[Callable[[dict[str, Any]], float], str]:
    """Each target's `max_age_hours` as the audit held it to: the report's policy (defaults, then the rules
    selecting its deployment by name or tag, later ones winning, as `Policy.for_deployment` merges them), and
    a sentence saying where the limit drawn comes from. A policy that does not read back: the defaults'."""
    from orchestrator.audit.policy import Policy, PolicyRule, PolicyValues  # here: the audit package imports report
    from orchestrator.inventory import selection_rules
    from orchestrator.model import Deployment

    default = float(policy.get("defaults", {}).get("max_age_hours", 24.0))
    try:
        rules = tuple(
            PolicyRule(
                tuple(r["select"]), {k: v for k, v in r.items() if k != "select"}, tuple(selection_rules(r["select"]))
            )
            for r in policy.get("rules", [])
        )
        resolved = Policy(PolicyValues.model_validate(policy["defaults"]), rules)
    except Exception:  # a report from another version: draw what is certain
        return (lambda _: default), f"the policy's default, {_num(default)} h, for every target (its rules do not read)"

    def limit(r: dict[str, Any]) -> float:
        deployment = Deployment.recorded(str(r["deployment"]), "", tuple(r.get("tags") or ()), True)
        return float(resolved.for_deployment(deployment).max_age_hours)

    if any("max_age_hours" in r for r in policy.get("rules", [])):
        return limit, f"each target's own limit: the policy's default, {_num(default)} h, or its rule's"
    return limit, f"the policy's max_age_hours, {_num(default)} h, for every target (no rule changes it)"


# --- Rendering -----------------------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("orchestrator", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _num
    return environment


@cache
def _asset(name: str) -> tuple[Markup, str]:
    """One of our own packaged files (the stylesheet, the script) to inline, and its CSP hash. Our file, not a
    document's text: the only thing this module ever marks safe."""
    text = (resources.files("orchestrator") / "templates" / name).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return Markup(text), f"'sha256-{digest}'"


def _render(template: str, **context: Any) -> str:
    style, style_hash = _asset("report.css")
    script, script_hash = _asset("report.js")
    csp = (
        f"default-src 'none'; style-src {style_hash}; script-src {script_hash}; img-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    return _environment().get_template(template).render(style=style, script=script, csp=csp, **context)


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    sort: str  # what the column sorts by: a number's value, else the text
    css: str = ""


@dataclass(frozen=True, slots=True)
class TableRow:
    key: str  # its outcome or verdict: what the select filters on
    cells: tuple[Cell, ...]


def table_rows(rows: list[dict[str, Any]], columns: list[str], key: str) -> list[TableRow]:
    """The table of every target: the cells shown, each with what it sorts by; the key column coloured."""
    return [
        TableRow(
            str(r[key]), tuple(_cell(c, r[c], _CSS.get(c, f"tag s-{r[key]}" if c == key else "")) for c in columns)
        )
        for r in rows
    ]


def _cell(column: str, value: Any, css: str) -> Cell:
    if value is None or value == "":
        return Cell("", "", css)
    if column in NUMERIC and isinstance(value, int | float) and not isinstance(value, bool):
        return Cell(_num(value), repr(value), css)
    if column == "violations":
        text = "; ".join(f"{v['control']}: {v['reason']}" for v in value)
    elif isinstance(value, list | tuple):
        text = ", ".join(map(str, value))
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        text = str(value)
    return Cell(text, text, css)


def _num(value: float) -> str:
    """A number as a person reads it: at most three decimals, no trailing zeros."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _epoch(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
