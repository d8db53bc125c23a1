"""The worker image as ECS runs it: built with podman, run with `--network host` against the emulator,
Redis, the fake LLM and the @connections recorder, it answers a job end to end as its own user, its
health check follows its heartbeat, and SIGTERM drains it within its grace."""
from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid

from cloudia.history import ASSISTANT
from cloudia.jobs import ANSWERED
from cloudia.settings import Settings, resilience_env
from stacks.config import PRODUCTION_PYTHON
from tests.image.podman import podman
from tests.worker.conftest import Harness, wait_until

AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION")
GRACE_S = 10.0


def container_env(settings: Settings) -> list[str]:
    """What the task definition sets: the settings and the AWS endpoint; nothing else of this process."""
    env = {f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)
           if f.name != "resilience" and getattr(settings, f.name) not in ("", None)}
    env.update(resilience_env(settings.resilience))
    env.update({name: os.environ[name] for name in AWS_VARIABLES})
    return [f"{name}={value}" for name, value in sorted(env.items())]


def log_records(container: str) -> list[dict]:
    lines = podman("logs", container, check=False).stdout.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def logged(container: str, message: str) -> dict | None:
    return next((r for r in log_records(container) if r.get("message") == message), None)


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_image_runs_the_production_python(worker_image):
    """The container's `python` (its venv's, on the base's interpreter) is the minor version the
    functions run on Lambda: the one production Python of stacks/config.py."""
    output = podman("run", "--rm", "--network", "none", worker_image, "python", "--version").stdout
    assert output.startswith("Python ") and minor(output.split()[1]) == PRODUCTION_PYTHON, output


def test_the_image_answers_a_job_as_its_own_user_and_drains_on_sigterm(worker_image, settings, fake_llm, recorder,
                                                                       tmp_path):
    harness = Harness(settings, fake_llm, recorder)
    settings = harness.configure(worker_shutdown_grace_s=GRACE_S)
    env_file = tmp_path / "worker.env"
    env_file.write_text("\n".join(container_env(settings)) + "\n")
    container = f"cloudia-worker-test-{uuid.uuid4().hex[:8]}"

    # GIVEN the image's health check where no worker loop has beaten yet: unhealthy
    assert podman("run", "--rm", "--network", "none", worker_image, "python", "-m", "worker.healthcheck",
                  check=False).returncode == 1
    try:
        podman("run", "-d", "--name", container, "--network", "host", "--env-file", str(env_file), worker_image)
        wait_until(lambda: logged(container, "worker started"), timeout_s=30, interval_s=0.2,
                   what=f"the worker to start in its container:\n{podman('logs', container, check=False).stderr}")

        # THEN the worker (PID 1) runs as uid/gid 10001, and the image's HEALTHCHECK (kept by the docker
        # format) passes once the loop has touched its heartbeat
        status = podman("exec", container, "cat", "/proc/1/status").stdout
        ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines() if line.startswith(("Uid", "Gid"))}
        assert ids == {"Uid": ["10001"] * 4, "Gid": ["10001"] * 4}
        wait_until(lambda: podman("healthcheck", "run", container, check=False).returncode == 0, timeout_s=10,
                   interval_s=0.2, what="the container's health check to pass")

        # WHEN a user sends a message (as sendMessage does), and ECS stops the task mid-answer
        fake_llm.set_profile(first_token_ms=200, tokens_per_s=40, answer_tokens_min=80, answer_tokens_max=80)
        connection = harness.connect("ana")
        job = harness.send_job("ana", "hello from the image")
        wait_until(lambda: any(e["event"] == "token" for e in recorder.events(connection)), timeout_s=20,
                   what="the answer to stream from the container")
        started = time.monotonic()
        podman("stop", "-t", str(int(GRACE_S + 5)), container, timeout_s=GRACE_S + 30)
        stopped_in_s = time.monotonic() - started

        # THEN it finishes the answer and exits 0 within its grace, saying it drained
        records = log_records(container)
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        assert exit_code == "0", f"exit {exit_code} after SIGTERM:\n{podman('logs', container).stdout[-3000:]}"
        assert stopped_in_s < GRACE_S, f"stopped in {stopped_in_s:.1f} s, past its {GRACE_S} s grace"
        drain = next(r for r in records if r.get("message") == "stop signal: finishing in-flight jobs")
        assert drain["in_flight"] == 1
        assert logged(container, "worker stopped")["outcomes"] == {"answered": 1}

        # AND the job is answered: the row reads answered, the answer reached the user and the history
        assert harness.jobs.get(job.job_id)["status"] == ANSWERED
        answers = [e["message"] for e in recorder.events(connection) if e["event"] == "answer"]
        assert len(answers) == 1 and len(answers[0].split()) == 80
        kept = [e for e in harness.history.since("ana", "c1") if e.role == ASSISTANT]
        assert [(e.job_id, e.message) for e in kept] == [(job.job_id, answers[0])]
        assert harness.queue_counts() == (0, 0)
    finally:
        podman("rm", "-f", "-t", "0", container, check=False)
        harness.loop.close()
