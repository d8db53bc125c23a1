"""The worker image installs worker_image/requirements.lock with `--require-hashes --no-deps`: the lock
must hold every pin of requirements.txt at its version, every dependency of what it holds, and each
distribution at the version the tests run (this interpreter's), each file by its hash."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stacks.config import PRODUCTION_PYTHON

WORKER_IMAGE = Path(__file__).resolve().parents[2] / "worker_image"
REGENERATE = "regenerate it with the command in the header of worker_image/requirements.lock"


def entries(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file, continuation lines joined, comments dropped."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parse(line: str) -> tuple[Requirement, list[str]]:
    spec, *options = line.split(" --")
    return Requirement(spec), [option for option in options if option.startswith("hash=sha256:")]


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[Requirement, list[str]]]:
    parsed = [parse(line) for line in entries(WORKER_IMAGE / "requirements.lock")]
    return {canonicalize_name(requirement.name): (requirement, hashes) for requirement, hashes in parsed}


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not an exact pin"
    return specifier.version


# The image's interpreter (stacks/config.py) where it differs from this one: markers evaluated for it.
PRODUCTION = {"python_version": PRODUCTION_PYTHON, "python_full_version": f"{PRODUCTION_PYTHON}.0",
              "implementation_version": f"{PRODUCTION_PYTHON}.0"}


def applies(requirement: Requirement, environment: dict[str, str] | None = None) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**(environment or {}), "extra": ""})


def test_every_pin_of_requirements_txt_is_locked_at_its_version(lock):
    for line in entries(WORKER_IMAGE / "requirements.txt"):
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        assert name in lock, f"{wanted.name} is in requirements.txt but not in the lock: {REGENERATE}"
        assert pinned_version(lock[name][0]) == pinned_version(wanted), (
            f"requirements.txt pins {wanted}, the lock {lock[name][0]}: {REGENERATE}")


def test_every_locked_distribution_is_pinned_by_hash(lock):
    for requirement, hashes in lock.values():
        pinned_version(requirement)
        assert hashes, f"{requirement.name} has no --hash in the lock: {REGENERATE}"


def test_the_lock_is_what_the_tests_run(lock):
    # Entries for other interpreters (async-timeout before Python 3.11.3) are not installed here.
    for requirement, _ in filter(lambda entry: applies(entry[0]), lock.values()):
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is locked for the image but not installed here: run `make deps`")
        assert installed == pinned_version(requirement), (
            f"the image would run {requirement}, the tests run {installed}: {REGENERATE}")


@pytest.mark.parametrize("environment", [None, PRODUCTION], ids=["tests' python", "image's python"])
def test_the_lock_holds_every_dependency_of_what_it_holds(lock, environment):
    # On the image's Python too: a dependency only a newer interpreter needs is locked as well.
    for requirement, _ in filter(lambda entry: applies(entry[0], environment), lock.values()):
        for dependency in map(Requirement, metadata.requires(requirement.name) or []):
            if applies(dependency, environment):
                assert canonicalize_name(dependency.name) in lock, (
                    f"{requirement.name} needs {dependency}, which the lock lacks: {REGENERATE}")
