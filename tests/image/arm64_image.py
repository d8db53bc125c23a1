"""The worker image for linux/arm64, the platform the stacks deploy (Graviton): built under
qemu-user-static (on an arm64 stand-in base where no registry answers) and smoke-run there.

Minutes from nothing, so `make image-test` runs it and `make test` does not collect it (no test_
prefix): pytest collects a file named on its command line whatever its name.
"""
from __future__ import annotations

import pytest

from stacks.config import PRODUCTION_PYTHON
from tests.image import podman

SMOKE = ("import platform, worker.app, worker.healthcheck, cloudia.settings; "
         "print(platform.machine(), platform.python_version())")


@pytest.fixture(scope="module")
def arm64_image() -> str:
    try:
        return podman.build_worker_image("arm64", log=print)
    except podman.ToolMissing as error:
        missing = str(error)
    pytest.fail(missing, pytrace=False)


def test_the_arm64_image_imports_the_worker_as_its_own_user(arm64_image):
    assert podman.podman("image", "inspect", "--format", "{{.Architecture}}", arm64_image).stdout.strip() == "arm64"
    run = ("run", "--rm", "--network", "none", "--platform", "linux/arm64", arm64_image)
    machine, version = podman.podman(*run, "python", "-c", SMOKE, timeout_s=300).stdout.split()
    # The production Python (stacks/config.py), the functions' minor version on Lambda.
    assert machine == "aarch64" and version.startswith(f"{PRODUCTION_PYTHON}."), version
    assert podman.podman(*run, "id", "-u").stdout.strip() == "10001"
    # No heartbeat yet: the image's health check says unhealthy.
    assert podman.podman(*run, "python", "-m", "worker.healthcheck", check=False, timeout_s=300).returncode == 1
