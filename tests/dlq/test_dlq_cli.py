"""`python -m cloudia.dlq`: what an operator types, what it prints and its exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cloudia import dlq
from cloudia.dlq_cli import StopBetweenBatches, main
from cloudia.jobs import FAILED
from tests.dlq.dlq_support import drain, fail_permanently, record_job, total

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def queue_env(resources, tmp_path, monkeypatch):
    """The environment a deployment gives the tool (as `Settings.from_env()` reads it)."""
    monkeypatch.setenv("JOBS_QUEUE_URL", resources.settings.jobs_queue_url)
    monkeypatch.setenv("JOBS_DLQ_URL", resources.dlq_url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return resources


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cloudia.dlq", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_list_as_a_module_prints_each_message_with_reason_and_receive_count(sqs, queue_env):
    # GIVEN a failed job in the DLQ named by JOBS_DLQ_URL
    job = fail_permanently(sqs, queue_env.dlq_url, "provider rejected the request")

    # WHEN `python -m cloudia.dlq list` runs
    result = run_module("list")

    # THEN it exits 0 and shows the count, the job, its reason and its receive count
    assert result.returncode == 0, result.stderr
    assert "1 messages" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if job.job_id in line]
    assert "provider rejected the request" in row and "RECEIVES" in result.stdout


def test_inspect_prints_the_job_and_its_row_in_the_jobs_table(sqs, queue_env, monkeypatch, capsys):
    # GIVEN a job the worker recorded as failed and sent to the DLQ
    job = fail_permanently(sqs, queue_env.dlq_url, "too long")
    settings = queue_env.settings
    store = record_job(settings, job)
    store.finish(job.job_id, FAILED, "too_long: 9000 chars")
    monkeypatch.setenv("JOBS_TABLE", settings.jobs_table)

    # WHEN it is inspected by job id
    assert main(["inspect", job.job_id]) == 0

    # THEN the job's content, reason, receive count and recorded state are shown
    out = capsys.readouterr().out
    assert job.message in out and job.conversation_id in out and job.client_message_id in out
    assert "reason         too long" in out and "receive count  0" in out
    assert "jobs table     failed (too_long: 9000 chars)" in out


def test_list_limit_and_json(sqs, queue_env, capsys):
    jobs = [fail_permanently(sqs, queue_env.dlq_url, f"reason {i}") for i in range(3)]
    assert main(["list", "--limit", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    assert {row["jobId"] for row in rows} <= {job.job_id for job in jobs}
    assert all(row["reason"].startswith("reason ") and row["receiveCount"] == 0 for row in rows)


def test_redrive_into_the_dlq_itself_is_refused(queue_env, capsys):
    assert main(["redrive", "--apply", "--queue-url", queue_env.dlq_url]) == 2
    assert "are the same queue" in capsys.readouterr().err


def test_inspect_of_an_unknown_id_exits_1(sqs, queue_env, capsys):
    assert main(["inspect", "job-nope"]) == 1
    assert "no message or job 'job-nope'" in capsys.readouterr().err


def test_redrive_is_a_dry_run_unless_applied_and_then_moves_all_with_agreeing_counts(sqs, queue_env, capsys):
    # GIVEN three failed jobs
    for reason in ("a", "b", "c"):
        fail_permanently(sqs, queue_env.dlq_url, reason)
    queue_url = queue_env.settings.jobs_queue_url

    # WHEN redrive runs without --apply
    assert main(["redrive"]) == 0
    # THEN it says what it would move and moves nothing
    out = capsys.readouterr().out
    assert "dry run: would move 3 of 3" in out and "counts agree" in out
    assert total(sqs, queue_env.dlq_url) == 3 and total(sqs, queue_url) == 0

    # WHEN it runs with --apply
    assert main(["redrive", "--apply"]) == 0
    # THEN all three moved and the counts before and after are printed and agree
    out = capsys.readouterr().out
    assert "before: DLQ" in out and " 3, jobs queue" in out
    assert "moved 3 (all) via receive/send/delete" in out
    assert "after:  DLQ" in out and "(expected 0: counts agree)" in out
    assert len(drain(sqs, queue_url)) == 3 and total(sqs, queue_env.dlq_url) == 0


def test_redrive_with_filters_from_flags_instead_of_the_environment(sqs, resources, tmp_path, capsys):
    # GIVEN two failures, and queue URLs given only as flags
    fail_permanently(sqs, resources.dlq_url, "LLM timeout")
    fail_permanently(sqs, resources.dlq_url, "invalid job")

    # WHEN only the timeouts are redriven
    code = main(["redrive", "--apply", "--reason", "timeout", "--older-than", "0s", "--newer-than", "1h",
                 "--dlq-url", resources.dlq_url, "--queue-url", resources.settings.jobs_queue_url,
                 "--journal", str(tmp_path / "j")])

    # THEN one moved, the other stays, and the run succeeds
    assert code == 0, capsys.readouterr()
    assert [m.failure_reason for m in dlq.look(sqs, resources.dlq_url)] == ["invalid job"]
    assert total(sqs, resources.settings.jobs_queue_url) == 1


@pytest.mark.parametrize("args, message", [
    (["list", "--older-than", "ten minutes"], "bad duration 'ten minutes'"),
    (["redrive", "--newer-than", "10"], "bad duration '10'"),
    (["list", "--limit", "0"], "expected a whole number >= 1"),
    (["list", "--older-than", "2h", "--newer-than", "1h"], "select nothing"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_a_message(queue_env, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        code = main(args)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_queue_exits_2_with_its_url(queue_env):
    missing = queue_env.dlq_url + "-missing"
    result = run_module("redrive", "--dlq-url", missing)
    assert result.returncode == 2
    assert f"queue does not exist: {missing}" in result.stderr


def test_no_dlq_url_at_all_exits_2(aws_env, monkeypatch, capsys):
    monkeypatch.delenv("JOBS_DLQ_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["list"])
    assert exit_info.value.code == 2
    assert "give --dlq-url or set JOBS_DLQ_URL" in capsys.readouterr().err


def test_a_first_signal_asks_to_stop_between_batches_and_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopBetweenBatches() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    # AND the previous handlers are back afterwards (whatever they were: a background job ignores SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_unreachable_endpoint_is_one_line_and_exit_1(queue_env):
    # GIVEN an SQS endpoint where nothing listens
    from tests.support.servers import free_port

    result = subprocess.run([sys.executable, "-m", "cloudia.dlq", "list"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"),
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: SQS call failed:") and "Traceback" not in result.stderr
