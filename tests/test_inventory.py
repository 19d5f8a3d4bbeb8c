"""Inventories load from TOML and CSV; every bad input is reported at once with file, line and fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.inventory import FIELDS, load_inventory, select

GOOD = """
[defaults]
username = "admin"
password_env = "TEST_INV_PASSWORD"
passcode_file = "secrets/passcode"
retention_days = 14
stores = ["default"]

[[deployments]]
name = "gis-eu-1"
url = "https://gis-eu-1.example.com/arcgis/"
tags = ["prod", "eu"]
stores = ["default", "offsite"]

[[deployments]]
name = "gis-us-1"
url = "http://127.0.0.1:8443/arcgis"
tags = ["test", "us"]
verify_tls = false
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_INV_PASSWORD", "s3cret-password")
    (tmp_path / "secrets").mkdir()
    passcode = tmp_path / "secrets" / "passcode"
    passcode.write_text("long-enough-passcode\n")
    os.chmod(passcode, 0o600)
    return tmp_path


def _write(folder: Path, text: str, name: str = "inventory.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_good_inventory_resolves_defaults_and_secrets(folder: Path) -> None:
    inventory = load_inventory(_write(folder, GOOD))
    eu, us = inventory.deployments
    assert (eu.name, eu.url, eu.tags, eu.stores) == (
        "gis-eu-1",
        "https://gis-eu-1.example.com/arcgis",
        ("prod", "eu"),
        ("default", "offsite"),
    )
    assert eu.password.get_secret_value() == "s3cret-password"
    assert eu.passcode.get_secret_value() == "long-enough-passcode"
    assert eu.retention_days == 14 and eu.verify_tls
    assert us.stores == ("default",) and not us.verify_tls
    assert "s3cret" not in repr(inventory)
    assert inventory.warnings == ()


def test_csv_inventory_with_the_same_fields(folder: Path) -> None:
    text = (
        "name,url,tags,stores,username,password_env,passcode_file,retention_days\n"
        "gis-eu-1,https://gis.example.com/arcgis,prod;eu,default;offsite,admin,TEST_INV_PASSWORD,secrets/passcode,7\n"
        "gis-us-1,https://gis-us.example.com/portal,,,admin,TEST_INV_PASSWORD,secrets/passcode,\n"
    )
    eu, us = load_inventory(_write(folder, text, "fleet.csv")).deployments
    assert eu.tags == ("prod", "eu") and eu.stores == ("default", "offsite") and eu.retention_days == 7
    assert us.stores == () and us.retention_days is None


def test_every_problem_is_reported_at_once_with_line_and_fix(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_VARIABLE_FOR_TEST", raising=False)
    text = """[defaults]
username = "admin"
password_env = "TEST_INV_PASSWORD"
passcode_file = "secrets/passcode"

[[deployments]]
name = "one"
url = "http://gis.example.com/arcgis"

[[deployments]]
name = "one"
url = "https://gis.example.com/arcgis"

[[deployments]]
name = "typo"
url = "https://gis.example.com/arcgis"
pasword_env = "X"

[[deployments]]
name = "literal"
url = "https://gis.example.com/arcgis"
password = "hunter2-literal"

[[deployments]]
name = "nourl"

[[deployments]]
name = "nocontext"
url = "https://gis.example.com"

[[deployments]]
name = "unset"
url = "https://gis.example.com/arcgis"
password_env = "UNSET_VARIABLE_FOR_TEST"

[[deployments]]
name = "shortcode"
url = "https://gis.example.com/arcgis"
passcode_file = "secrets/short"

[[deployments]]
name = "nofile"
url = "https://gis.example.com/arcgis"
passcode_file = "secrets/missing"
"""
    (folder / "secrets" / "short").write_text("short\n")
    path = _write(folder, text)
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    problems = "\n".join(caught.value.problems)
    expected = [
        # each at the line of the key at fault; a missing key at its entry's [[deployments]] line
        f"{path}:8: deployments[0] (one): url: 'http://gis.example.com/arcgis' uses http; use https",
        f"{path}:11: deployments[1] (one): duplicate name 'one' (first at {path}:7)",
        f"{path}:17: deployments[2] (typo): unknown key 'pasword_env'; did you mean 'password_env'?",
        f"{path}:22: deployments[3] (literal): a literal secret ('password') is refused",
        'password_env = "VARIABLE" or password_file = "path/to/file"',
        f"{path}:24: deployments[4] (nourl): url: missing",
        f"{path}:29: deployments[5] (nocontext): url: 'https://gis.example.com' has no web context",
        f"{path}:34: deployments[6] (unset): password_env: the environment variable UNSET_VARIABLE_FOR_TEST is not set",
        f"{path}:39: deployments[7] (shortcode): passcode_file: the passcode is shorter than 8 characters",
        f"{path}:44: deployments[8] (nofile): passcode_file: cannot read",
    ]
    for fragment in expected:
        assert fragment in problems
    assert "hunter2" not in problems


def test_an_unset_default_variable_is_reported_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_INV_PASSWORD")
    with pytest.raises(InputError) as caught:
        load_inventory(_write(folder, GOOD))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{folder / 'inventory.toml'}:4: [defaults]: password_env: ")


def test_secret_file_readable_by_others_draws_a_warning(folder: Path) -> None:
    os.chmod(folder / "secrets" / "passcode", 0o644)
    assert "chmod 600" in load_inventory(_write(folder, GOOD)).warnings[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not toml = = 1", "not valid TOML"),
        ("[defaults]\nusername = 'a'", "no deployments"),
        ("[defaultz]\nusername = 'a'", "did you mean 'defaults'?"),
    ],
)
def test_broken_files(folder: Path, text: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        load_inventory(_write(folder, text))


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the inventory"):
        load_inventory(tmp_path / "nope.toml")


def test_selection_by_tag_and_name_glob(folder: Path) -> None:
    deployments = load_inventory(_write(folder, GOOD)).deployments
    assert [d.name for d in select(deployments, ["tag=prod"])] == ["gis-eu-1"]
    assert [d.name for d in select(deployments, ["name=gis-*"])] == ["gis-eu-1", "gis-us-1"]
    assert [d.name for d in select(deployments, ["name=gis-*", "tag=us"])] == ["gis-us-1"]
    with pytest.raises(InputError, match="no deployment matched"):
        select(deployments, ["tag=nothing"])
    with pytest.raises(InputError, match="write tag=TAG or name=GLOB"):
        select(deployments, ["region=eu"])


EXAMPLES = Path(__file__).parents[1] / "inventories"


@pytest.mark.parametrize("name", ["example.toml", "example.csv"])
def test_shipped_examples_load_and_document_every_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples are valid, agree with each other, and show every field (so they cannot drift)."""
    for variable in ("ARCGIS_PASSWORD", "BACKUP_PASSCODE", "BACKUP_PASSCODE_US"):
        monkeypatch.setenv(variable, f"value-of-{variable}")
    deployments = load_inventory(EXAMPLES / name).deployments
    assert [(d.name, d.tags, d.stores) for d in deployments] == [
        ("gis-eu-1", ("prod", "eu"), ("default", "offsite")),
        ("gis-us-1", ("prod", "us"), () if name.endswith(".csv") else ("default",)),
        ("gis-lab", ("test",), () if name.endswith(".csv") else ("default",)),
    ]
    assert deployments[1].username == "dr-operator"
    assert deployments[1].passcode.get_secret_value() == "value-of-BACKUP_PASSCODE_US"
    text = (EXAMPLES / name).read_text()
    assert [field for field in FIELDS if field not in text] == []


def test_credentials_in_a_url_are_refused_without_being_echoed(folder: Path) -> None:
    """A URL holding a user and password is refused, and the password is not in the message."""
    text = GOOD.replace("https://gis-eu-1.example.com/arcgis/", "http://admin:Hunter2-secret@gis.example.com/arcgis")
    with pytest.raises(InputError) as caught:
        load_inventory(_write(folder, text))
    assert "must not hold credentials" in caught.value.problems[0]
    assert "Hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://gis.example.com/arcgis?access_token=AT-leak&api_key=AK-leak&sig=SIG-leak#FRAG-leak",
            "'http://gis.example.com/arcgis' uses http; use https",
        ),
        ("http://gis.example.com/arcgis#access_token=FRAG-leak", "'http://gis.example.com/arcgis' uses http"),
        (
            "https://gis.example.com/arcgis?token=T-leak&Signature=SIG-leak#FRAG-leak",
            "'https://gis.example.com/arcgis' must not hold a query or a fragment",
        ),
        ("ftp://gis.example.com/arcgis?password=P-leak", "'ftp://gis.example.com/arcgis' is not an https URL"),
        ("https://gis.example.com?client_secret=CS-leak", "'https://gis.example.com' must not hold a query"),
    ],
)
def test_a_url_in_a_message_never_shows_its_query_or_fragment(folder: Path, url: str, message: str) -> None:
    """Whatever is wrong with a URL, its message shows scheme, host and path only: a query or a fragment
    (tokens, API keys, signatures) is never echoed into the terminal, the logs or the ledger."""
    path = _write(folder, GOOD.replace("https://gis-eu-1.example.com/arcgis/", url))
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    (problem,) = caught.value.problems
    assert message in problem
    assert "leak" not in str(caught.value) and "?" not in problem and "#" not in problem


def test_one_deployment_listed_twice_under_two_names_is_refused(folder: Path) -> None:
    """Two entries for one URL would start two DR jobs on one deployment: refused, naming both entries."""
    twice = GOOD + '\n[[deployments]]\nname = "gis-eu-1-again"\nurl = "HTTPS://GIS-EU-1.example.com:443/arcgis"\n'
    path = _write(folder, twice)
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    (problem,) = caught.value.problems
    url_line = twice.splitlines().index('url = "HTTPS://GIS-EU-1.example.com:443/arcgis"') + 1  # the key's own line
    assert problem.startswith(f"{path}:{url_line}: deployments[2] (gis-eu-1-again): url:")
    assert "is also deployment 'gis-eu-1'" in problem and "list each deployment once" in problem
    other_context = GOOD + '\n[[deployments]]\nname = "gis-eu-2"\nurl = "https://gis-eu-1.example.com/portal"\n'
    assert len(load_inventory(_write(folder, other_context)).deployments) == 3  # another web context is another site


def test_a_problem_points_at_the_line_of_its_key_not_the_entry_header(folder: Path) -> None:
    """A bad value is reported at its own key's line in the entry, past comments and other keys; the same key
    in [defaults] (overridden) does not take the blame."""
    text = GOOD.replace('tags = ["test", "us"]', '# the US site\ntags = ["test", "us"]\n\nretention_days = -1')
    path = _write(folder, text)
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    line = text.splitlines().index("retention_days = -1") + 1
    assert caught.value.problems == [
        f"{path}:{line}: deployments[1] (gis-us-1): retention_days: must be a positive number of days; "
        "leave it out for backups that never expire"
    ]


def test_wrong_kinds_of_value_name_the_field_and_the_fix(folder: Path) -> None:
    """Values of the wrong kind (strict: TOML says what it means) and [defaults] keys that name one deployment
    are each refused with the line and what to write instead."""
    text = GOOD.replace("retention_days = 14", 'retention_days = "14"\nname = "everyone"').replace(
        "verify_tls = false", 'verify_tls = "no"\npasscode_env = 5\npasscode_file = "secrets/passcode"'
    )
    path = _write(folder, text)
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    problems = "\n".join(caught.value.problems)
    # each at its key's line; an inherited value at its line in [defaults]
    assert f"{path}:7: [defaults]: 'name' names one deployment: write it in each [[deployments]]" in problems
    assert f"{path}:6: deployments[0] (gis-eu-1): retention_days: must be a positive number of days" in problems
    assert f"{path}:20: deployments[1] (gis-us-1): verify_tls: must be true or false" in problems
    assert f"{path}:21: deployments[1] (gis-us-1): passcode_env: must name an environment variable, e.g." in problems
    assert "variable 5" not in problems  # refused as it is, not then looked up as well


# -- secret files: one line of a regular file, read without hanging --

_LOAD_GUARDED = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # reading /dev/zero whole ends here, fast
from orchestrator.errors import InputError
from orchestrator.inventory import load_inventory
try:
    load_inventory(Path(sys.argv[1]))
except InputError as error:
    print(json.dumps(error.problems))
else:
    print("[]")
"""


def _problems_of_a_guarded_load(path: Path) -> list[str]:
    """load_inventory in a child process with a timeout and a memory cap, so a hang or a runaway read fails the
    test instead of the test session."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_GUARDED, str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    problems: list[str] = json.loads(done.stdout)
    return problems


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_a_secret_file_that_is_not_a_regular_file_is_a_problem_not_a_hang(folder: Path, kind: str) -> None:
    """A FIFO (which would block the run forever), /dev/zero (which would fill memory) or a folder as
    passcode_file is an inventory problem at its line, naming what it is and the fix."""
    secret = {"fifo": folder / "secrets" / "pipe", "dev-zero": Path("/dev/zero"), "folder": folder / "secrets"}[kind]
    if kind == "fifo":
        os.mkfifo(secret)
    path = _write(folder, GOOD.replace('"secrets/passcode"', f'"{secret}"'))
    what = {"fifo": "a named pipe (FIFO)", "dev-zero": "a character device", "folder": "a folder"}[kind]
    assert _problems_of_a_guarded_load(path) == [
        f"{path}:5: [defaults]: passcode_file: {secret} is {what}, not a regular file; "
        "point it at a regular file holding the secret on one line"
    ]


def test_a_secret_file_with_a_second_line_is_a_problem_naming_the_line(folder: Path) -> None:
    """Two lines (here behind a link) are not sent as one passcode: a problem naming file:line of the second,
    and neither line is echoed."""
    two_lines = folder / "secrets" / "two-lines"
    two_lines.write_text("first-line-secret\n\nsecond-line-secret\n")
    os.chmod(two_lines, 0o600)
    (folder / "secrets" / "link").symlink_to(two_lines)
    path = _write(folder, GOOD.replace('"secrets/passcode"', '"secrets/link"'))
    problems = _problems_of_a_guarded_load(path)
    assert problems == [
        f"{path}:5: [defaults]: passcode_file: a second line at {two_lines}:3; the file must hold the secret "
        "alone, on one line (a final newline is fine): remove the other lines"
    ]
    assert "line-secret" not in "".join(problems)


def test_a_secret_file_over_64_kib_is_a_problem(folder: Path) -> None:
    """A secret file is read up to a cap: a huge one is refused, not loaded whole."""
    (folder / "secrets" / "passcode").write_text("x" * (64 * 1024 + 1))
    with pytest.raises(InputError) as caught:
        load_inventory(_write(folder, GOOD))
    assert caught.value.problems == [
        f"{folder / 'inventory.toml'}:5: [defaults]: passcode_file: {folder / 'secrets' / 'passcode'} is over 64 KiB, "
        "too large for a secret; point it at a regular file holding the secret on one line"
    ]


def test_a_secret_file_behind_a_link_to_one_line_still_works(folder: Path) -> None:
    """Kubernetes mounts secrets as links to regular files: a link to a one-line file (newline ended) is read."""
    (folder / "secrets" / "..data").mkdir()
    (folder / "secrets" / "passcode").rename(folder / "secrets" / "..data" / "passcode")
    (folder / "secrets" / "passcode").symlink_to(Path("..data") / "passcode")
    (eu, _) = load_inventory(_write(folder, GOOD)).deployments
    assert eu.passcode.get_secret_value() == "long-enough-passcode"
