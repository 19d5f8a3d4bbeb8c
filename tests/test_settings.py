"""Settings: flags win over ORCHESTRATOR_* variables, which win over the settings file, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.settings import FailureBudget, load_settings, parse_failure_budget


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("concurrency = 5\nmax_running = 6\nretries = 7\n")
    monkeypatch.setenv("ORCHESTRATOR_MAX_RUNNING", "60")
    monkeypatch.setenv("ORCHESTRATOR_RETRIES", "9")
    settings = load_settings({"retries": 1}, settings_file)
    assert (settings.concurrency, settings.max_running, settings.retries) == (5, 60, 1)
    assert settings.poll_initial == 1.0  # nobody set it: the default


def test_defaults_without_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_CONCURRENCY", raising=False)
    settings = load_settings({})
    assert settings.concurrency == 32 and settings.job_timeout == 7500 and settings.max_running == 0


def test_problems_name_their_source(tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("concurency = 5\n")
    with pytest.raises(InputError, match="concurency") as caught:
        load_settings({}, settings_file)
    assert str(settings_file) in caught.value.problems[0]
    with pytest.raises(InputError, match="cannot read the settings file"):
        load_settings({}, tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("5", FailureBudget(count=5)),
        ("10%", FailureBudget(percent=10.0)),
        (" 2.5 % ", FailureBudget(percent=2.5)),
        (None, FailureBudget()),
    ],
)
def test_failure_budget_parsing(text: str | None, budget: FailureBudget) -> None:
    assert parse_failure_budget(text) == budget


@pytest.mark.parametrize("text", ["0", "1.5", "150%", "0%", "many"])
def test_failure_budget_refusals(text: str) -> None:
    with pytest.raises(ValueError, match=r"count|share"):
        parse_failure_budget(text)


def test_failure_budget_thresholds() -> None:
    assert FailureBudget(count=3).exceeded(3, 100) and not FailureBudget(count=3).exceeded(2, 100)
    assert FailureBudget(percent=10).exceeded(10, 100) and not FailureBudget(percent=10).exceeded(9, 100)
    assert not FailureBudget().exceeded(1000, 1000)


def test_a_settings_file_that_is_not_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    """Broken TOML in the settings file names the file and the line, before anything is sent."""
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("concurrency = 5\nretries = = 2\n")
    with pytest.raises(InputError) as caught:
        load_settings({}, settings_file)
    assert (
        caught.value.problems[0].startswith(f"{settings_file}: not valid TOML:")
        and "line 2" in caught.value.problems[0]
    )


def test_one_settings_file_serves_run_and_audit(tmp_path: Path) -> None:
    """A key only `run` takes is left to it by `audit` (and the reverse); a key no command takes is refused."""
    from orchestrator.settings import AuditSettings, load_command_settings

    settings_file = tmp_path / "settings.toml"
    settings_file.write_text('concurrency = 8\npoll_max = 90.0\npolicy = "policy.toml"\n')
    audit = load_command_settings(AuditSettings, {}, settings_file)
    run = load_settings({}, settings_file)
    assert (audit.concurrency, audit.policy) == (8, Path("policy.toml"))
    assert (run.concurrency, run.poll_max) == (8, 90.0)
    settings_file.write_text("poll_maxx = 90.0\n")
    with pytest.raises(InputError, match="poll_maxx"):
        load_command_settings(AuditSettings, {}, settings_file)


def test_a_typo_in_the_settings_file_names_its_line_and_the_setting_meant(tmp_path: Path) -> None:
    """An unknown key in the settings file is refused at its line, with the closest setting suggested."""
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text("# nightly\nretries = 3\n\nconcurency = 5\n")
    with pytest.raises(InputError) as caught:
        load_settings({}, settings_file)
    assert caught.value.problems == [f"{settings_file}:4: concurency: unknown setting; did you mean 'concurrency'?"]


def test_an_unknown_key_among_the_flags_is_said_to_be_a_flag() -> None:
    """A key no setting has, given as a flag (by a caller of the library), names the flags as its source."""
    with pytest.raises(InputError) as caught:
        load_settings({"poll_maxx": 9.0})
    assert caught.value.problems == ["settings (flags): poll_maxx: unknown setting; did you mean 'poll_max'?"]
