"""The container image and the Kubernetes manifests: valid, installable, and saying what the CLI accepts."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from kubernetes_validate import utils as kubernetes_validate_utils

from orchestrator.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The newest Kubernetes version whose schemas the package ships (it validates offline).
KUBERNETES_VERSION: str = kubernetes_validate_utils.latest_version()
# What the Job controller puts in JOB_COMPLETION_INDEX for the first pod of an Indexed Job.
SUBSTITUTIONS = {"JOB_COMPLETION_INDEX": "0"}
NOT_YET = {
    "--shard": "the --shard flag is being added to `orchestrator run` in another change (issue 15, sharding)",
    "merge": "`orchestrator report merge` is being added in another change (issue 15, sharding)",
}


def _resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for resource in kubernetes_validate_utils.resources_from_file(str(path)):
            yield f"{path.name}:{resource['kind']}/{resource['metadata']['name']}", cast(dict[str, Any], resource)


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    spec = resource["spec"]
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    elif resource["kind"] != "Job":
        return None
    return cast(dict[str, Any], spec["template"]["spec"])


def _command_lines() -> Iterator[Any]:
    """Each container's arguments to the image's entrypoint, with the $(VAR)s Kubernetes would expand."""
    for name, resource in _resources():
        pod = _pod_spec(resource)
        for container in pod["containers"] if pod else []:
            assert "command" not in container, f"{name}: leave the entrypoint (orchestrator) to the image"
            argv = [re.sub(r"\$\((\w+)\)", lambda m: SUBSTITUTIONS[m.group(1)], arg) for arg in container["args"]]
            reasons = [reason for word, reason in NOT_YET.items() if word in argv and not _cli_knows(word)]
            marks = [pytest.mark.xfail(strict=False, reason=reasons[0])] if reasons else []
            yield pytest.param(argv, id=name, marks=marks)


def _cli_knows(word: str) -> bool:
    """Whether the CLI has `run --shard` / `report merge` yet (both come with the sharding change)."""
    command, argv = ("run", ["run"]) if word == "--shard" else ("report", ["report", "merge"])
    parser, _ = _parser(argv)
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    subparser = commands.choices[command]
    if word == "--shard":
        return word in subparser._option_string_actions
    return any(action.dest == "folders" for action in subparser._actions)


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments left out), as (KEYWORD, rest)."""
    # As Docker reads it: comment lines go first (even inside a continued instruction), then lines are joined.
    kept = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(kept))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_there_are_manifests_for_the_nightly_run_the_shards_and_the_merge() -> None:
    """The recipes the README's scheduling section points at are all there."""
    assert {path.name for path in MANIFESTS} >= {"cronjob.yaml", "pvc.yaml", "sharded-job.yaml", "merge-job.yaml"}


@pytest.mark.parametrize(("name", "resource"), list(_resources()), ids=[name for name, _ in _resources()])
def test_each_manifest_is_valid_against_the_kubernetes_schemas(name: str, resource: dict[str, Any]) -> None:
    """Every resource validates (strictly: no unknown field) against the schemas of a recent Kubernetes."""
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("name", "resource"), list(_resources()), ids=[name for name, _ in _resources()])
def test_each_pod_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp(name: str, resource: dict[str, Any]) -> None:
    """The pods run unprivileged on a read-only root filesystem, with /tmp an emptyDir."""
    pod = _pod_spec(resource)
    if pod is None:
        pytest.skip("not a workload")
    assert pod["securityContext"]["runAsNonRoot"] is True
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts.get("/tmp") in empty_dirs
        assert "/reports" in mounts
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]


def test_the_cronjob_never_overlaps_and_takes_its_secrets_from_a_secret() -> None:
    """The nightly run: no overlap, secrets by reference, the inventory from a ConfigMap, reports on a claim."""
    (resource,) = [resource for _, resource in _resources() if resource["kind"] == "CronJob"]
    assert resource["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod_spec(resource)
    assert pod is not None
    (container,) = pod["containers"]
    secrets = {env["name"]: env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"]}
    assert set(secrets) == {"ARCGIS_PASSWORD", "BACKUP_PASSCODE"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert "configMap" in mounts["/config"] and "persistentVolumeClaim" in mounts["/reports"]


def test_the_sharded_job_runs_one_pod_per_shard_at_once() -> None:
    """The Indexed Job's completions, parallelism and --shard /N agree."""
    (resource,) = [resource for _, resource in _resources() if resource.get("spec", {}).get("completionMode")]
    spec = resource["spec"]
    assert spec["completionMode"] == "Indexed"
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shard") + 1] == f"/{spec['completions']}"
    assert spec["parallelism"] == spec["completions"]
    assert "/reports/shard-$(JOB_COMPLETION_INDEX)" in args


@pytest.mark.parametrize("argv", list(_command_lines()))
def test_each_container_command_line_is_accepted_by_the_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each manifest's arguments parse with the orchestrator's own parser: no unknown flag, no missing value."""
    parser, _ = _parser(argv)
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"orchestrator {shlex.join(argv)}: {capsys.readouterr().err.strip()}")


def test_the_image_runs_orchestrator_as_a_non_root_user() -> None:
    """The Dockerfile's entrypoint is the console script and its last USER is not root."""
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["orchestrator"]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("VOLUME", '["/reports"]') in instructions


def test_the_image_bakes_no_secret_in() -> None:
    """No password, passcode or token is set in the image; the build context leaves out everything but the code."""
    for keyword, rest in _instructions():
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|PASSCODE|TOKEN|SECRET", rest, re.IGNORECASE), rest
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :] and "*" in ignored  # everything is left out unless named


@pytest.mark.slow
def test_the_images_install_step_yields_a_working_orchestrator(tmp_path: Path) -> None:
    """The Dockerfile's COPY and `pip install` steps, replayed into a fresh virtualenv, give `orchestrator --version`.

    pip fetches hatchling and the dependencies from the configured index (as `docker build` would); where none
    can be reached the test is skipped, saying so.
    """
    context = tmp_path / "context"
    context.mkdir()
    installs = []
    for keyword, rest in _instructions():
        if keyword == "COPY":
            *sources, destination = rest.split()
            for source in sources:
                target = (
                    context / destination / Path(source).name if destination.endswith("/") else context / destination
                )
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(ROOT / source, target)
        elif keyword == "RUN" and "pip install" in rest:
            installs.append(shlex.split(rest.split("&&")[0]))
    assert installs == [["pip", "install", "--no-cache-dir", "."]]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", *installs[0]], cwd=context, capture_output=True, text=True, timeout=300
    )
    if pip.returncode != 0 and re.search(
        r"No matching distribution|Could not find a version|NewConnectionError", pip.stderr
    ):
        pytest.skip(f"no package index reachable for the image's install step: {pip.stderr.strip()[-300:]}")
    assert pip.returncode == 0, pip.stderr
    version = subprocess.run(
        [str(venv / "bin" / "orchestrator"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("orchestrator ")
