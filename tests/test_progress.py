"""The log lines of a run: one per event, as text or JSON lines, and never a secret in either."""

from __future__ import annotations

import io
import json

from orchestrator.events import Event, EventKind
from orchestrator.model import Outcome, TargetState
from orchestrator.progress import LogObserver
from orchestrator.redact import MASK, remember, remember_token
from tests.conftest import make_deployment

SECRET = 'S3cret "quoted" pässwörd'  # a quote and non-ASCII: escaped, so unmatched, once serialised


def _failed(error: str) -> Event:
    target = TargetState(
        index=0,
        deployment=make_deployment("gis-eu-1"),
        store="default",
        backup_name="nightly",
        retention_ms=None,
        outcome=Outcome.FAILED,
        error_class="permanent",
        error=error,
        submitted_at=1.0,
        finished_at=2.0,
    )
    return Event(EventKind.FINISHED, 2.0, target)


def _json_record(event: Event) -> dict[str, object]:
    log = io.StringIO()
    LogObserver(log, json_lines=True).on_event(event)
    (line,) = log.getvalue().splitlines()
    record: dict[str, object] = json.loads(line)
    return record


def test_a_json_log_line_never_holds_a_secret_once_a_log_shipper_decodes_it() -> None:
    """An error holding a secret with `"` and `ö`: the JSON line, decoded as a log shipper does, says why
    the target failed with the secret masked, and the secret is nowhere in it."""
    remember(SECRET)
    record = _json_record(_failed(f"the server said: wrong passcode {SECRET}, try again"))
    assert record["error"] == f"the server said: wrong passcode {MASK}, try again"
    assert SECRET not in json.dumps(record, ensure_ascii=False)


def test_each_value_is_masked_before_the_line_is_serialised() -> None:
    """A token on a line of its own in an error: whole in the value, but `\\ntok...` once serialised, a word
    the masking of the serialised line alone would not know. Masked in the value, before."""
    remember_token("tok-12345.abc")
    record = _json_record(_failed("sign-in refused:\ntok-12345.abc"))
    assert record["error"] == f"sign-in refused:\n{MASK}"


def test_the_masking_of_the_serialised_line_never_breaks_the_json() -> None:
    """A secret matched across a JSON escape only once serialised (`\\n` then `nabcdefgh`): its mask would cut
    the escape in two, so the line holds when and what happened, and no half-masked value. Still JSON."""
    remember("nabcdefgh")
    log = io.StringIO()
    LogObserver(log, json_lines=True).on_event(_failed("line one\nabcdefgh"))
    record = json.loads(log.getvalue())
    assert record == {"ts": record["ts"], "event": "finished", "withheld": MASK}
    assert "abcdefgh" not in log.getvalue()


def test_a_text_log_line_never_holds_a_secret() -> None:
    """The plain text line of the same failure: its reason, the secret masked."""
    remember(SECRET)
    log = io.StringIO()
    LogObserver(log).on_event(_failed(f"wrong passcode {SECRET}"))
    assert f"error=wrong passcode {MASK}" in log.getvalue() and "pässwörd" not in log.getvalue()
