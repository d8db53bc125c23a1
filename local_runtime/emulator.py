"""The AWS emulator and the `local` target's deployment into it.

`ensure_emulator` reuses whatever answers on the port (moto server, or LocalStack if the user runs
it) and otherwise starts moto's server. `deploy_local` bootstraps and deploys the `local` target with
`cdklocal` (the pinned CLI in node_modules), the same stacks `cdk deploy` sends to AWS.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
# moto's fixed account and our region: what `cdklocal bootstrap` is pointed at.
EMULATOR_ACCOUNT = "123456789012"
EMULATOR_REGION = "us-east-1"
DEPLOY_TIMEOUT_S = 900
DEFAULT_PORT = 4566


class EmulatorError(RuntimeError):
    """The emulator could not be started or the deployment failed; the message says what to do."""


def endpoint_for(port: int) -> str:
    # "localhost", not 127.0.0.1: moto reads a TemplateURL as path-style S3 only with "localhost".
    return f"http://localhost:{port}"


def is_answering(endpoint: str, timeout_s: float = 0.5) -> bool:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=timeout_s)
        return True
    except urllib.error.HTTPError:
        return True  # something speaks HTTP there
    except OSError:
        return False


def moto_server_command(port: int) -> list[str]:
    """moto's server from this interpreter's packages (the pinned moto), on loopback, its DynamoDB
    writes atomic (local_runtime/moto_server.py)."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise EmulatorError("moto server is not installed: run `make deps` (pip install 'moto[server]')")
    return [sys.executable, str(Path(__file__).with_name("moto_server.py")), "-H", "127.0.0.1", "-p", str(port)]


def ensure_emulator(port: int = DEFAULT_PORT, start_timeout_s: float = 30.0) -> tuple[str, Callable[[], None]]:
    """The emulator's endpoint and a function that stops it if we started it (a no-op otherwise)."""
    endpoint = endpoint_for(port)
    if is_answering(endpoint):
        return endpoint, lambda: None
    proc = subprocess.Popen(moto_server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + start_timeout_s
    while not is_answering(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise EmulatorError(f"moto server did not start on port {port}; is the port taken by something else?")
        time.sleep(0.1)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return endpoint, stop


def aws_environment(endpoint: str) -> dict[str, str]:
    """What boto3 and the CDK CLI need to talk to the emulator, and never to a real account."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        # cdklocal needs S3 separately: its default host does not resolve offline.
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": EMULATOR_REGION,
        "AWS_REGION": EMULATOR_REGION,
    }


def _cdk_environment(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws_environment(endpoint))
    env.update({
        # cdklocal drops other AWS_* variables unless they are allow-listed.
        "AWS_ENVAR_ALLOWLIST": "AWS_REGION,AWS_DEFAULT_REGION,AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_S3",
        "CDK_DEFAULT_ACCOUNT": EMULATOR_ACCOUNT,
        "CDK_DEFAULT_REGION": EMULATOR_REGION,
        # A project-local CLI cache: ~/.cdk remembers account ids across emulators.
        "CDK_HOME": str(ROOT / ".cdk"),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",
    })
    env.pop("AWS_PROFILE", None)
    return env


def _cdklocal(args: list[str], endpoint: str, log: Callable[[str], None]) -> None:
    exe = ROOT / "node_modules" / ".bin" / "cdklocal"
    if not exe.exists():
        raise EmulatorError("cdklocal is not installed: run `make deps` (npm ci)")
    log("cdklocal " + " ".join(args))
    result = subprocess.run([str(exe), *args], cwd=ROOT, env=_cdk_environment(endpoint),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=DEPLOY_TIMEOUT_S)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise EmulatorError(f"`cdklocal {args[0]}` failed (exit {result.returncode}):\n{tail}")


def deploy_local(endpoint: str, stage: str = "dev", log: Callable[[str], None] = print) -> None:
    """Bootstrap the emulator's account and deploy every stack of the `local` target.

    The default emulator keeps its cloud assembly in `cdk.out.local-<stage>` (a redeploy reuses the
    bundled asset); a deployment to any other endpoint gets a throw-away one, so deployments to two
    emulators at once never share an output folder (the CLI locks it)."""
    if endpoint == endpoint_for(DEFAULT_PORT):
        _deploy(endpoint, stage, str(ROOT / f"cdk.out.local-{stage}"), log)
        return
    (ROOT / ".cdk").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cdk.out.", dir=ROOT / ".cdk") as out_dir:
        _deploy(endpoint, stage, out_dir, log)


def _deploy(endpoint: str, stage: str, out_dir: str, log: Callable[[str], None]) -> None:
    context = ["-c", "target=local", "-c", f"stage={stage}", "-o", out_dir]
    _cdklocal(["bootstrap", f"aws://{EMULATOR_ACCOUNT}/{EMULATOR_REGION}", *context], endpoint, log)
    # --method=direct: moto keeps stack Outputs and applies updates only without change sets.
    _cdklocal(["deploy", "--all", "--require-approval", "never", "--method=direct",
               "--parameters", "BootstrapVersion=/cdk-bootstrap/hnb659fds/version", *context], endpoint, log)
