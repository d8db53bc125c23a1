"""The worker image, built once per session with podman (tests/image/podman.py), and the fake LLM and
@connections recorder it runs against (the worker tests' own fixtures)."""
from __future__ import annotations

import pytest

from tests.image import podman
from tests.worker.conftest import fake_llm, recorder  # noqa: F401 - fixtures shared with tests/worker


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The image's tag; a test fails, not skips, where podman and its friends are missing."""
    try:
        return podman.build_worker_image(log=print)
    except podman.ToolMissing as error:
        missing = str(error)
    pytest.fail(missing, pytrace=False)
