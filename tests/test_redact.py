"""One redaction layer: no password, passcode or token reaches a log line, a report or the ledger,
even when a careless server repeats the request, secrets and all, in its error messages."""

from __future__ import annotations

import html
import io
import json
import random
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from orchestrator.api import open_clients
from orchestrator.clock import SystemClock
from orchestrator.ledger import Ledger
from orchestrator.model import Outcome, build_targets
from orchestrator.progress import LogObserver
from orchestrator.recorder import LedgerWriter
from orchestrator.redact import MASK, Secrets, redact_all, remember
from orchestrator.report import write_reports
from orchestrator.runner import run_fleet
from orchestrator.settings import load_settings
from tests.conftest import PASSWORD
from tests.test_runner import simulated


def test_known_secrets_are_masked_longest_first_and_short_values_are_not_taken() -> None:
    """A value registered is masked wherever it appears; one containing another is masked whole."""
    secrets = Secrets()
    secrets.add("abc", "hunter2-long", "hunter2-long-and-longer")
    text = "sent hunter2-long-and-longer, then hunter2-long; abc is too short to be a secret"
    assert secrets.redact(text) == f"sent {MASK}, then {MASK}; abc is too short to be a secret"


def test_tokens_are_masked_without_growing_the_pattern_every_line_is_matched_against() -> None:
    """3,000 tokens later the password alternation is the one compiled before them, and every token is masked.

    Tokens come one per sign-in for the whole run; were they added to the alternation, every log line
    would be matched against thousands of alternatives (and the pattern recompiled after each sign-in).
    """
    secrets = Secrets()
    secrets.add("hunter2-password")
    assert secrets.redact("hunter2-password") == MASK
    compiled = secrets._pattern
    tokens = [f"tok{n:04d}.{'x' * 40}" for n in range(3000)]
    for token in tokens:
        secrets.add_token(token)
    line = f"renewed with {tokens[0]}, then {tokens[-1]}; password hunter2-password; tok9999.{'x' * 40} is unknown"
    assert secrets.redact(line) == f"renewed with {MASK}, then {MASK}; password {MASK}; tok9999.{'x' * 40} is unknown"
    assert secrets._pattern is compiled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://h/arcgis/admin?f=json&token=eyJ0.abc-_", f"https://h/arcgis/admin?f=json&token={MASK}"),
        ("request: username=admin&password=S3cr3t!&f=json", f"request: username=admin&password={MASK}&f=json"),
        ("passcode=whatever123 was refused", f"passcode={MASK} was refused"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {MASK}"),
        ("X-Esri-Authorization: bearer Zm9vYmFy==", f"X-Esri-Authorization: bearer {MASK}"),
        ("nothing secret here: tokens, passwords", "nothing secret here: tokens, passwords"),
        ("?f=json&access_token=at-1&api_key=ak-2", f"?f=json&access_token={MASK}&api_key={MASK}"),
        ("?apikey=ak-3&sig=s1g&signature=s2g", f"?apikey={MASK}&sig={MASK}&signature={MASK}"),
        ("client_secret=cs-4 key=k-5 X-Api-Key=k-6", f"client_secret={MASK} key={MASK} X-Api-Key={MASK}"),
        ("ACCESS_TOKEN=at-7&Sig=s-8&PassCode=p-9", f"ACCESS_TOKEN={MASK}&Sig={MASK}&PassCode={MASK}"),
        ("next=%2Fadmin%3Faccess_token%3Dat-10%26f%3Djson", f"next=%2Fadmin%3Faccess_token%3D{MASK}%26f%3Djson"),
        ('{"error": "password=a\\"b, then"}', f'{{"error": "password={MASK}, then"}}'),
        ("monkey=banana keyword=x design=plain", "monkey=banana keyword=x design=plain"),
    ],
)
def test_shapes_that_carry_a_secret_are_masked_whatever_the_value(text: str, expected: str) -> None:
    """`token=`, `access_token=`, `api_key=`, `sig=`, `password=`... (any case, `=` or `%3D`) and `Bearer` values
    are masked even if never registered; a JSON escape is masked whole; `monkey=` is not a key."""
    assert Secrets().redact(text) == expected


SECRET: Final = 'Pä ss"wo\\rd/&<ö>'  # a space, a quote, a backslash, a slash, HTML's specials, non-ASCII


def _lower_hex(encoded: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)


def _numeric(secret: str, template: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else template.format(ord(c)) for c in secret)


# Each form a server may echo a secret in; every one differs from the secret as written (but the first).
FORMS: Final[dict[str, Callable[[str], str]]] = {
    "literal": lambda s: s,
    "percent-encoded, %20": lambda s: quote(s, safe=""),
    "percent-encoded, +": lambda s: quote_plus(s, safe=""),
    "percent-encoded, lower-case hex": lambda s: _lower_hex(quote(s, safe="")),
    "percent-encoded, + and lower-case hex": lambda s: _lower_hex(quote_plus(s, safe="")),
    "percent-encoded, / kept": lambda s: quote(s),
    "JSON, \\uXXXX": lambda s: json.dumps(s)[1:-1],
    'JSON raw, \\" and \\\\': lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "JSON, \\/": lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    "HTML named": lambda s: html.escape(s),
    "HTML numeric": lambda s: _numeric(s, "&#{};"),
    "HTML numeric, hex": lambda s: _numeric(s, "&#x{:X};"),
}


@pytest.mark.parametrize("form", FORMS)
def test_a_known_secret_is_masked_in_each_form_a_server_may_echo_it_in(form: str) -> None:
    """Percent-encoded (%20 or +, either case of hex), JSON-escaped (\\u00f6 or raw, \\", \\\\, \\/) or HTML-escaped
    (named or numeric): the secret, spaces, quotes, backslashes and non-ASCII included, is masked whole."""
    encoded = FORMS[form](SECRET)
    assert form == "literal" or encoded != SECRET  # the form is one of its own, not the literal again
    secrets = Secrets()
    secrets.add(SECRET)
    assert secrets.redact(f"refused: {encoded}; try again") == f"refused: {MASK}; try again"


def test_a_known_secret_is_masked_whole_before_a_shape_could_cut_it_at_a_space() -> None:
    """`password=correct horse battery` with that password known: all of it masked, not only its first word."""
    secrets = Secrets()
    secrets.add("correct horse battery")
    assert secrets.redact("echo: password=correct horse battery&f=json") == f"echo: password={MASK}&f=json"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Invalid%20token%3A%20tok-12345.abc%20expired", f"Invalid%20token%3A%20{MASK}%20expired"),
        ("Invalid+token+tok-12345.abc+expired", f"Invalid+token+{MASK}+expired"),
        ("\\u0022tok-12345.abc\\u0022", f"\\u0022{MASK}\\u0022"),
        ("grant=tok-12345.abc", f"grant={MASK}"),
        ("b64%2Bt0k%2Fen%3D%3D and b64%2bt0k%2fen%3d%3d", f"{MASK} and {MASK}"),
        ("tok-12345.abcd is another", "tok-12345.abcd is another"),
    ],
)
def test_a_known_token_is_found_whole_in_an_encoded_text(text: str, expected: str) -> None:
    """A token after a `%20`, a form-encoded space or a `\\u0022`, after `name=`, or with its `+/=` percent-encoded
    is still a whole word of the lookup, and masked; a longer word holding it is not a token."""
    secrets = Secrets()
    secrets.add_token("tok-12345.abc")
    secrets.add_token("b64+t0k/en==")
    assert secrets.redact(text) == expected


_PRINTABLE: Final = st.characters(exclude_categories=("C", "Zl", "Zp"))


@given(
    st.text(_PRINTABLE, min_size=8, max_size=40),
    st.text(max_size=40),
    st.text(max_size=40),
    st.sampled_from(list(FORMS)),
)
def test_no_form_of_a_known_secret_survives_whatever_surrounds_it(
    secret: str, before: str, after: str, form: str
) -> None:
    """For any printable secret of 8 characters or more, in any form, amid any text: no form of it is left."""
    assume(secret not in MASK)
    secrets = Secrets()
    secrets.add(secret)
    masked = secrets.redact(before + FORMS[form](secret) + after)
    for name, encode in FORMS.items():
        assert encode(secret) not in masked, f"the {name} form survived"


def test_every_string_of_a_document_is_redacted() -> None:
    """Nested dicts and lists: every string is passed through, other values left alone."""
    document = {"a": ["token=x1y2z3", {"b": "password=p4ss"}], "n": 3, "none": None}
    assert redact_all(document) == {"a": [f"token={MASK}", {"b": f"password={MASK}"}], "n": 3, "none": None}


@pytest.mark.anyio
async def test_a_server_echoing_secrets_in_its_errors_leaks_none_of_them(tmp_path: Path) -> None:
    """Wrong credentials, a forbidden account and a refused create, each answered with the request echoed:
    the report, the log and the ledger carry the reasons, masked, and never the secrets."""
    deployments_spec = [
        {"name": "wrong-password", "wrong_credentials": True},
        {"name": "no-privilege", "forbidden": True},
        {"name": "unknown-store"},
    ]
    async with simulated(tmp_path, count=0, deployments=deployments_spec, quirks={"echo_request_in_errors": True}) as (
        fleet,
        deployments,
    ):
        deployments = [replace(d, stores=("nope",)) if d.name == "unknown-store" else d for d in deployments]
        settings = load_settings({"report_dir": tmp_path / "reports", "retries": 0, "poll_initial": 0.05})
        clock = SystemClock()
        started = clock.now()
        targets = build_targets(deployments, name_template=settings.name_template, run_id="r", started_at=started)
        ledger = Ledger.open(tmp_path / "ledger.sqlite3")
        ledger.begin_run(
            run_id="r", kind="run", parent_run_id="", inventory="i", settings={}, started_at=started, targets=targets
        )
        log = io.StringIO()
        async with open_clients(settings, clock, random.Random(3)) as clients:
            result = await run_fleet(
                targets,
                settings,
                clients=clients,
                run_id="r",
                started_at=started,
                clock=clock,
                observer=LogObserver(log, verbose=True),
                ledger=LedgerWriter(ledger, "r"),
            )
        ledger.end_run("r", result.finished_at, "", result.targets)
        ledger.close()
        issued = [token for d in fleet.deployments.values() for token in d.tokens]
    assert all(t.outcome is Outcome.FAILED for t in result.targets), [(t.key, t.error) for t in result.targets]
    passcode = deployments[0].passcode.get_secret_value()
    written = _everything_written(write_reports(result), tmp_path, log.getvalue())
    for where, text in written.items():
        for secret in (PASSWORD, passcode, *issued):
            assert secret not in text, f"a secret reached the {where}"
    report = written["report.json"]
    assert "password=" + MASK in report and "passcode=" + MASK in report  # the echo happened, and was masked
    assert f"Bearer {MASK}" in report


def _everything_written(report_folder: Path, ledger_folder: Path, log: str) -> dict[str, str]:
    ledger = b"".join(path.read_bytes() for path in ledger_folder.glob("ledger.sqlite3*"))
    reports = {path.name: path.read_text() for path in report_folder.iterdir()}
    return {"log": log, **reports, "ledger": ledger.decode("utf-8", "replace")}


def test_a_failure_message_is_redacted_and_cleaned_where_it_is_made() -> None:
    """A server's words in a TargetError lose known secrets, terminal escapes and their excess length at once,
    so no sink (terminal, report, ledger) can receive them raw."""
    from orchestrator.errors import ErrorClass, TargetError

    remember("hunter2-passcode")
    error = TargetError(ErrorClass.PERMANENT, "\x1b[2J\x1b]8;;http://x/phish\x07bad hunter2-passcode " + "x" * 5000)
    assert "\x1b" not in error.message and "\x07" not in error.message
    assert "hunter2-passcode" not in error.message and "[redacted]" in error.message
    assert len(error.message) <= 500 and str(error) == error.message
    assert TargetError(ErrorClass.PERMANENT, "\x1b\x07").message == "(no message)"
