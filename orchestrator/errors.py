"""The error tree. Exit codes are decided in one place only: `cli.main`.

    OrchestratorError
    ├── InputError        bad inventory, settings or selection: nothing was sent (exit 2)
    ├── RunCrashed        an unforeseen error (its cause) broke a run; the report of what is known is written
    └── TargetError       one target's failure, classified; becomes a report row, never stops the run
        ├── (error_class) authentication | configuration | transient | permanent
        │                 | job_failed | job_timed_out | interrupted | unreachable | internal
        └── SignInFailed  the sign-in a request needed failed: the request itself was never sent

Only `transient` errors, and connections never made (`unreachable` so far), are retried, for the retry
policy's time budget (`backoff.Retry`); a sequence none of whose attempts reached the deployment ends
`unreachable` (`guard.last_word`). A `TargetError` whose create request may have reached the server
(`ambiguous`) is reconciled with the server before any new create. Every message is redacted and
cleaned of control characters where it is made: it reaches terminals, reports and the ledger.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Final

from orchestrator.redact import redact
from orchestrator.untrusted import shown

MESSAGE_READ: Final = 64 * 1024  # characters of a failure message looked at; 500 are kept (`untrusted.shown`)


class ErrorClass(StrEnum):
    AUTHENTICATION = "authentication"  # bad credentials, missing privilege, token refused after renewal
    CONFIGURATION = "configuration"  # unknown store, wrong URL or context, TLS verification failed
    TRANSIENT = "transient"  # 5xx, 429, timeouts, connection errors, UNAVAILABLE, DR job already running
    PERMANENT = "permanent"  # anything else the server refused, or an answer we cannot read
    JOB_FAILED = "job_failed"  # the backup job ended FAILED or CANCELLED
    JOB_TIMED_OUT = "job_timed_out"  # the job did not end within --job-timeout
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM / run deadline before the target ended
    UNREACHABLE = "unreachable"  # no attempt ever reached it (refused, no such host, no connect, circuit open)
    INTERNAL = "internal"  # an answer nothing here foresaw raised an error: that deployment's, no one else's


class OrchestratorError(Exception):
    """Base of everything this package raises on purpose."""


class InputError(OrchestratorError):
    """Input that cannot be used. `problems` lists every one found, each naming where and how to fix it;
    `warnings`, what was noticed on the way (a secret file others can read), shown all the same."""

    def __init__(self, problems: list[str], warnings: tuple[str, ...] = ()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings


class RunCrashed(OrchestratorError):
    """A run broke on an unforeseen error, `cause`; every target's row is in the report at `report` anyway."""

    def __init__(self, report: Path, cause: Exception) -> None:
        super().__init__(f"the run stopped early; report of what is known: {report}")
        self.report = report
        self.cause = cause


class TargetError(OrchestratorError):
    """A classified failure of one request or job on one deployment. The message never holds a secret, and
    is cleaned where it is made: much of it is a server's words, and it reaches terminals and files."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        retry_after: float | None = None,
        ambiguous: bool = False,
        code: int | None = None,
    ) -> None:
        # No secret, no control character, not huge. Cut first (well past what is kept), so masking a
        # megabyte-long answer does not hold the event loop for seconds.
        message = shown(redact(message[:MESSAGE_READ])) if message else message
        super().__init__(message)
        self.error_class = error_class
        self.message = message or "(no message)"
        self.retry_after = retry_after
        self.ambiguous = ambiguous  # the request may have been carried out although no answer came
        self.code = code

    @property
    def transient(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT


def internal_error(error: BaseException) -> TargetError:
    """An exception nothing here foresaw, as the one deployment's failure it is (`internal`): its type and
    its message (redacted and cleaned, as every failure's), never the fleet's end."""
    return TargetError(ErrorClass.INTERNAL, f"internal error ({type(error).__name__}): {error}")


class SignInFailed(TargetError):
    """The sign-in a request needed failed, so the request was never sent: never ambiguous, and retried
    (while transient) even for a request that is not, such as a create."""
