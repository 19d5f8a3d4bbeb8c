"""The files the tool writes: 0600 in folders of 0700, made without following a link someone planted."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.files import UnsafePath, named_dir, open_private, private_dir, private_file, write_private

UMASKS = (0o022, 0o077)


@contextmanager
def umask_of(mask: int) -> Iterator[None]:
    """The process's umask set to `mask` for the block (tests in one worker run one at a time)."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def victim(tmp_path: Path) -> Path:
    """A file of someone's that a planted link points at: it must come out of every test unchanged."""
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_a_private_folder_and_its_missing_parents_are_0700(tmp_path: Path, mask: int) -> None:
    """Folders the tool makes are its user's alone, whatever the umask (and less if the umask asks for less)."""
    with umask_of(mask):
        private_dir(tmp_path / "reports" / "run-1")
        named_dir(tmp_path / "state" / "app")
    for folder in ("reports", "reports/run-1", "state", "state/app"):
        assert mode_of(tmp_path / folder) == 0o700 & ~mask


def test_a_private_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    """A link planted where the tool's own folder goes is refused, naming the path and the fix; its target
    gets nothing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "run-1").symlink_to(elsewhere)
    with pytest.raises(UnsafePath) as refused:
        private_dir(tmp_path / "reports" / "run-1")
    assert str(refused.value).startswith(f"{tmp_path / 'reports' / 'run-1'}: is a symbolic link")
    assert "remove it" in str(refused.value)
    assert list(elsewhere.iterdir()) == []


def test_a_private_folder_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder someone else made (and may still change) is not the tool's own: refused."""
    (tmp_path / "run-1").mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: os.lstat(tmp_path).st_uid + 1)
    with pytest.raises(UnsafePath, match="belongs to another user"):
        private_dir(tmp_path / "run-1")


def test_a_named_folder_may_be_a_link_the_user_made(tmp_path: Path) -> None:
    """The folder the user names (--report-dir) may be a link to a folder; a link to a file is refused."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "reports").symlink_to(tmp_path / "disk")
    assert named_dir(tmp_path / "reports") == tmp_path / "reports"
    (tmp_path / "file-link").symlink_to(victim(tmp_path))
    with pytest.raises(UnsafePath, match="is not a folder"):
        named_dir(tmp_path / "file-link")


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_a_written_file_is_0600_and_replaces_the_old_one_whole(tmp_path: Path, mask: int) -> None:
    """write_private: mode 0600 whatever the umask; an existing file is replaced by rename, no temporary left."""
    folder = private_dir(tmp_path / "run")
    (folder / "report.json").write_text("old")
    os.chmod(folder / "report.json", 0o644)
    with umask_of(mask):
        write_private(folder / "report.json", "new ✓\n")
    assert (folder / "report.json").read_text(encoding="utf-8") == "new ✓\n"
    assert mode_of(folder / "report.json") == 0o600
    assert [p.name for p in folder.iterdir()] == ["report.json"]


def test_a_link_planted_at_the_file_is_refused_and_its_target_unchanged(tmp_path: Path) -> None:
    """A link at the file to write is refused (not followed, not replaced): the file it points at is unchanged."""
    target = victim(tmp_path)
    folder = private_dir(tmp_path / "run")
    (folder / "report.json").symlink_to(target)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        write_private(folder / "report.json", "overwritten")
    assert target.read_text() == "precious\n"
    assert (folder / "report.json").is_symlink() and [p.name for p in folder.iterdir()] == ["report.json"]


def test_a_folder_swapped_for_a_link_after_it_was_made_is_refused(tmp_path: Path) -> None:
    """The folder is checked again when each file is written: swapped for a link meanwhile, nothing is written."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = private_dir(tmp_path / "run")
    folder.rmdir()
    folder.symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        write_private(folder / "report.json", "text")
    assert list(elsewhere.iterdir()) == []


def test_a_file_written_in_place_is_never_opened_through_a_link(tmp_path: Path) -> None:
    """open_private (the ledger's lock) refuses a link, and a file with a second name (a hard link), and
    truncates neither's target."""
    target = victim(tmp_path)
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        open_private(tmp_path / "lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    os.link(target, tmp_path / "hard")
    with pytest.raises(UnsafePath, match="hard links"):
        open_private(tmp_path / "hard", os.O_RDWR | os.O_CREAT)
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_a_file_written_in_place_is_made_0600_new_or_old(tmp_path: Path, mask: int) -> None:
    """private_file creates 0600 whatever the umask, and tightens a file an older version left 0644."""
    with umask_of(mask):
        private_file(tmp_path / "new")
    assert mode_of(tmp_path / "new") == 0o600
    (tmp_path / "old").write_text("")
    os.chmod(tmp_path / "old", 0o644)
    private_file(tmp_path / "old")
    assert mode_of(tmp_path / "old") == 0o600
