"""One Python for production: the functions' Lambda runtime, the wheels their bundling installs, and
the worker image's base are the same minor version, the one stacks/config.py owns (PRODUCTION_PYTHON).
Each is read where it takes effect (the synthesized templates and asset manifest, the pip command,
the Dockerfile), so a change to one of them alone fails here."""
from __future__ import annotations

import json
import re

from stacks.components import lambda_code
from stacks.config import PRODUCTION_PYTHON, WORKER_BASE_IMAGE
from tests.infra.conftest import ROOT

DOCKERFILE = ROOT / "worker_image" / "Dockerfile"
OFFICIAL_BASE = re.compile(r"^python:(?P<minor>\d+\.\d+)-slim-(?P<debian>[a-z]+)@sha256:[0-9a-f]{64}$")


def our_function_runtimes(synth) -> dict[str, str]:
    """Runtime of each of the project's functions (descriptions "cloud-ia ..."), not the CDK's own
    (BucketDeployment's, whose runtime the CDK picks)."""
    runtimes = {}
    for name, template in synth.templates.items():
        for logical_id, resource in template.find_resources("AWS::Lambda::Function").items():
            if json.dumps(resource["Properties"].get("Description", "")).startswith('"cloud-ia'):
                runtimes[f"{name}/{logical_id}"] = resource["Properties"]["Runtime"]
    return runtimes


def bundling_target(tmp_path, monkeypatch) -> str:
    """The `--python-version` of the pip command the local bundling runs (the run itself stubbed)."""
    commands = []
    monkeypatch.setattr(lambda_code.subprocess, "run", lambda command, **_: commands.append(command))
    assert lambda_code.PipLocalBundling().try_bundle(str(tmp_path), image=None)
    [command] = commands
    return command[command.index("--python-version") + 1]


def dockerfile_base() -> str:
    [default] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    return default


def test_the_owner_names_an_official_base_of_its_own_minor_version():
    match = OFFICIAL_BASE.match(WORKER_BASE_IMAGE)
    assert match, f"{WORKER_BASE_IMAGE}: expected python:<minor>-slim-<debian release>@sha256:<digest>"
    assert match["minor"] == PRODUCTION_PYTHON


def test_the_functions_the_bundling_and_the_image_run_one_python(aws_synth, local_synth, tmp_path, monkeypatch):
    runtimes = {**our_function_runtimes(aws_synth), **{f"local:{k}": v for k, v in
                                                       our_function_runtimes(local_synth).items()}}
    assert len(runtimes) >= 6  # the five route functions (both targets) and the AUTH token's rotation
    lambda_minors = {re.fullmatch(r"python(\d+\.\d+)", runtime)[1] for runtime in runtimes.values()}
    image_match = OFFICIAL_BASE.match(dockerfile_base())
    assert image_match, f"the Dockerfile's default base {dockerfile_base()} is not an official python base"
    found = {
        "the functions' Lambda runtime": ", ".join(sorted(lambda_minors)),
        "the Lambda bundling's --python-version": bundling_target(tmp_path, monkeypatch),
        "the Dockerfile's default BASE_IMAGE": image_match["minor"],
    }
    assert set(found.values()) == {PRODUCTION_PYTHON}, (
        f"one Python for production (stacks/config.py PRODUCTION_PYTHON = {PRODUCTION_PYTHON!r}), found {found}")


def test_the_cdk_builds_the_image_on_the_dockerfiles_default_base(aws_synth):
    """The CDK passes the owner's base as BASE_IMAGE; the Dockerfile's default (a plain `docker build`)
    is the same reference, digest included."""
    assert dockerfile_base() == WORKER_BASE_IMAGE
    images = [image for manifest in aws_synth.out_dir.glob("*.assets.json")
              for image in json.loads(manifest.read_text()).get("dockerImages", {}).values()]
    assert images, "no container image asset in the aws target"
    for image in images:
        assert image["source"]["dockerFile"] == "worker_image/Dockerfile"
        assert image["source"].get("dockerBuildArgs") == {"BASE_IMAGE": WORKER_BASE_IMAGE}


def test_the_docker_fallback_bundles_in_the_runtimes_own_build_image():
    assert lambda_code.RUNTIME.name == f"python{PRODUCTION_PYTHON}"
    assert lambda_code.RUNTIME.bundling_image.image.endswith(f"build-python{PRODUCTION_PYTHON}")
