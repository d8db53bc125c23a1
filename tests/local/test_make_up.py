"""`make up` (`python -m local_runtime.up`) for real, on free ports: a fresh moto server and Redis, the
`local` target deployed with cdklocal, the services started from the deployed names; a WebSocket
client chats through it; SIGTERM stops everything it started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from local_runtime.gateway import deployed_function_names
from tests.support.servers import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def clean_env(**extra) -> dict[str, str]:
    """The caller's environment without anything pointing at an emulator or an account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


class Output:
    """Collects a process's output on a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed:\n" + "\n".join(self.lines))

    def text(self) -> str:
        self._thread.join(5)
        return "\n".join(self.lines)


@pytest.mark.timeout(360)
def test_make_up_deploys_the_local_target_serves_a_chat_and_stops_everything_on_sigterm(tmp_path, own_redis):
    gateway_port, emulator_port, llm_port = free_ports(3)
    ports = {"gateway": gateway_port, "emulator": emulator_port, "redis": own_redis.port, "llm": llm_port}
    # GIVEN a Redis the person already runs, and nothing on the other ports WHEN `make up` starts
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_runtime.up", "--gateway-port", str(ports["gateway"]),
         "--emulator-port", str(ports["emulator"]), "--redis-port", str(ports["redis"]),
         "--llm-port", str(ports["llm"]), "--log-dir", str(tmp_path)],
        cwd=ROOT, env=clean_env(CLOUDIA_STAGE="dev"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    output = Output(proc)
    try:
        output.wait_for("cloud-ia is up in", proc, READY_TIMEOUT_S)
        # THEN it printed each step and where everything is
        printed = "\n".join(output.lines)
        for expected in ("==> AWS emulator", "started moto server", "reusing the Redis already on",
                         "==> deploying", "cdklocal deploy",
                         f"http://localhost:{ports['gateway']}/", f"http://localhost:{ports['llm']}/v1"):
            assert expected in printed
        # AND it created the user pool and the demo user, whose sign-in it printed
        from local_runtime.discovery import runtime_environment
        from local_runtime.identity import DEMO_USER, LocalUserPool, dev_password

        assert f"{DEMO_USER} / {dev_password(DEMO_USER)}" in printed
        endpoint = f"http://localhost:{ports['emulator']}"
        env = runtime_environment(endpoint, "dev")
        pool = LocalUserPool(endpoint, env["USER_POOL_ID"], env["USER_POOL_CLIENT_ID"])
        # AND that user signs in through cognito-idp, as the page does, and chats through the deployed system
        token = pool.sign_in(DEMO_USER, dev_password(DEMO_USER))["AccessToken"]
        with connect(f"ws://localhost:{ports['gateway']}/ws?token={token}") as ws:
            ws.send(json.dumps({"action": "sendMessage", "conversationId": "c", "clientMessageId": "m-1",
                                "message": "deployed with cdklocal?"}))
            frames = []
            while not frames or frames[-1]["event"] not in ("answer", "error"):
                frames.append(json.loads(ws.recv(timeout=30)))
        assert frames[0]["event"] == "queued"
        assert frames[-1]["event"] == "answer" and "deployed with cdklocal?" in frames[-1]["message"]
        # AND the gateway's Lambda Invoke mode finds every deployed function by its route
        names = deployed_function_names(f"http://localhost:{ports['emulator']}", "dev")
        assert set(names) == {"authorizer", "connect", "disconnect", "send_message", "default"}
        # WHEN it gets SIGTERM
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # THEN everything it started has stopped, and the Redis it found is left running
    assert "==> stopped" in output.text()
    still_open = [name for name, port in ports.items() if port_open(port)]
    assert still_open == ["redis"]


@pytest.mark.timeout(60)
def test_a_failing_step_says_what_failed_and_how_to_fix_it_and_stops_what_it_started(tmp_path):
    # GIVEN a machine without redis-server (a PATH without it)
    emulator_port, redis_port = free_ports(2)
    env = clean_env(PATH=str(Path(sys.executable).parent))
    # WHEN `make up` runs
    result = subprocess.run(
        [sys.executable, "-m", "local_runtime.up", "--emulator-port", str(emulator_port),
         "--redis-port", str(redis_port), "--log-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=50,
    )
    # THEN it exits non-zero, says what failed and how to fix it
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: redis-server is not installed" in result.stderr
    assert "apt-get install redis-server" in result.stderr
    # AND the emulator it had started is stopped again
    assert "started moto server" in result.stdout
    assert not port_open(emulator_port)


@pytest.mark.timeout(30)
def test_a_taken_port_fails_before_anything_starts(tmp_path):
    # GIVEN something already listens on the gateway's port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        emulator_port = free_port()
        # WHEN `make up` runs
        result = subprocess.run(
            [sys.executable, "-m", "local_runtime.up", "--gateway-port", str(port),
             "--emulator-port", str(emulator_port), "--log-dir", str(tmp_path)],
            cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=25,
        )
    # THEN it stops at once, names the port and the flag to choose another, and started nothing
    assert result.returncode == 1
    assert f"port {port} for the gateway is already in use" in result.stderr
    assert "--gateway-port" in result.stderr
    assert "emulator" not in result.stdout.split("==> stopping")[0].lower()
