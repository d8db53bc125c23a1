"""`make up`: the whole system on this machine, in the foreground, stopped cleanly on Ctrl-C/SIGTERM.

Steps, each printed as it goes: the AWS emulator on :4566 (reused if something answers there), Redis
on :6379 (reused likewise), `cdklocal` deploy of the `local` target, discovery of the deployed
names, then the fake LLM, the local WebSocket gateway and the worker as child processes. A failing
step says what failed and how to fix it, and exits non-zero. Every port can be overridden (flags or
environment), so tests run the same code on free ports.

    python -m local_runtime.up [--gateway-port 8080] [--emulator-port 4566] [--redis-port 6379] [--llm-port 8089]

Time to ready measured on a 2-core machine with everything installed: ~29 s on a first run (deploy
~26 s, most of it `cdklocal` synthesizing), ~16 s when the CDK CLI's caches are warm.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from cloudia.settings import Resilience
from local_runtime import discovery, emulator, fake_llm, identity
from local_runtime.processes import (READY_TIMEOUT_S, ROOT, STOP_GRACE_S, Child, StartedProcesses, StepFailed,
                                      child_env, detail, http_ok, port_answers, step, wait_until)

# The deployment stage of the `local` target (stack names cloudia-local-{stage}-...).
STAGE = os.environ.get("CLOUDIA_STAGE", "dev")
FAKE_LLM_API_KEY = "local-fake"


@dataclass(frozen=True)
class Ports:
    gateway: int = 8080
    emulator: int = 4566
    redis: int = 6379
    llm: int = 8089


def services_env(runtime_env: Mapping[str, str], ports: Ports, aws_endpoint: str | None = None,
                 gateway_url: str = "", llm_url: str = "") -> dict[str, str]:
    """The deployment's environment plus what differs locally: Redis, the gateway, the fake LLM."""
    env = dict(runtime_env)
    env.setdefault("REDIS_URL", f"redis://localhost:{ports.redis}/0")
    env["WS_MANAGEMENT_ENDPOINT"] = gateway_url or f"http://localhost:{ports.gateway}"
    llm_url = llm_url or f"http://localhost:{ports.llm}"
    real_key = os.environ.get("LLM_API_KEY", "")
    if real_key and real_key != FAKE_LLM_API_KEY:
        # A real provider when the person gives a key (LLM_PROVIDER, LLM_BASE_URL, LLM_MODEL optional).
        env.update({k: os.environ[k] for k in ("LLM_PROVIDER", "LLM_BASE_URL", "LLM_MODEL") if k in os.environ})
        env["LLM_API_KEY"] = real_key
        env.setdefault("LLM_PROVIDER", "openai")
    else:
        # The worker's real OpenAI provider against the fake LLM: only the base URL differs from AWS.
        env.update({"LLM_PROVIDER": "openai", "LLM_BASE_URL": f"{llm_url}/v1",
                    "LLM_API_KEY": FAKE_LLM_API_KEY})
    if aws_endpoint:
        # The emulator's endpoint; credentials and region only where the deployment gave none.
        env.update({k: env.get(k, v) for k, v in emulator.aws_environment(aws_endpoint).items()})
        env["AWS_ENDPOINT_URL"] = aws_endpoint
    return env


def start_fake_llm(stack: StartedProcesses, ports: Ports, profile: str | None = None) -> str:
    """The fake LLM, writing answers at the pace of `profile` (its own default, `model`, if None)."""
    url = f"http://localhost:{ports.llm}"
    if port_answers(ports.llm):
        raise StepFailed(f"port {ports.llm} is already in use, so the fake LLM cannot start there",
                         f"stop what listens on {ports.llm} or choose another port with --llm-port")
    child = stack.spawn("fake-llm", [sys.executable, "-m", "local_runtime.fake_llm", "--port", str(ports.llm),
                                     *(["--profile", profile] if profile else [])], child_env({}))
    if not wait_until(lambda: http_ok(f"{url}/_faults"), READY_TIMEOUT_S, child.proc):
        raise StepFailed(f"the fake LLM did not start:\n{child.tail()}", f"see {child.log_path}")
    return url


def start_gateway(stack: StartedProcesses, env: Mapping[str, str], ports: Ports, extra_args: Sequence[str] = ()) -> str:
    url = f"http://localhost:{ports.gateway}"
    if port_answers(ports.gateway):
        raise StepFailed(f"port {ports.gateway} is already in use, so the gateway cannot start there",
                         f"stop what listens on {ports.gateway} or choose another port with --gateway-port")
    child = stack.spawn("gateway", [sys.executable, "-m", "local_runtime.gateway", "--port", str(ports.gateway),
                                    *extra_args], child_env(env))
    if not wait_until(lambda: http_ok(f"{url}/healthz"), READY_TIMEOUT_S, child.proc):
        raise StepFailed(f"the gateway did not start:\n{child.tail()}", f"see {child.log_path}")
    return url


def start_worker(stack: StartedProcesses, env: Mapping[str, str]) -> Child:
    # The worker finishes its in-flight jobs within its shutdown grace: wait that long before killing it.
    grace_s = float(env.get("WORKER_SHUTDOWN_GRACE_S", Resilience().worker_shutdown_grace_s)) + STOP_GRACE_S / 2
    child = stack.spawn("worker", [sys.executable, "-m", "worker"], child_env(env),
                        stop_timeout_s=grace_s)
    # The worker has no port: alive after a moment means it read its settings and started polling.
    time.sleep(1.0)
    if child.proc.poll() is not None:
        raise StepFailed(f"the worker exited at start:\n{child.tail()}", f"see {child.log_path}")
    return child


def start_services(stack: StartedProcesses, runtime_env: Mapping[str, str], ports: Ports,
                   aws_endpoint: str | None = None, gateway_args: Sequence[str] = (),
                   gateway_url: str = "", llm_url: str = "", llm_profile: str | None = None) -> dict[str, str]:
    """Fake LLM, gateway and worker for a deployment whose functions run with `runtime_env`."""
    env = services_env(runtime_env, ports, aws_endpoint, gateway_url, llm_url)
    step(f"starting the fake LLM on :{ports.llm}" + (f" (profile {llm_profile})" if llm_profile else ""))
    start_fake_llm(stack, ports, llm_profile)
    step(f"starting the local WebSocket gateway on :{ports.gateway}")
    start_gateway(stack, env, ports, list(gateway_args))
    step("starting the worker")
    start_worker(stack, env)
    return env


def ensure_redis(stack: StartedProcesses, port: int) -> str:
    url = f"redis://localhost:{port}/0"
    if port_answers(port):
        detail(f"reusing the Redis already on :{port}")
        return url
    exe = shutil.which("redis-server")
    if not exe:
        raise StepFailed("redis-server is not installed",
                         "install it: `sudo apt-get install redis-server` (Debian/Ubuntu) or "
                         "`brew install redis` (macOS), or run Redis on :%d yourself" % port)
    data_dir = tempfile.mkdtemp(prefix="cloudia-redis-")
    child = stack.spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", data_dir], os.environ)
    if not wait_until(lambda: port_answers(port), 10, child.proc):
        raise StepFailed(f"redis-server did not start:\n{child.tail()}", f"see {child.log_path}")
    # Redis outlives the services that use it: stop it last.
    stack.children.remove(child)

    def stop_redis() -> None:
        child.proc.terminate()
        child.proc.wait(timeout=10)

    stack.stoppers.append(("redis", stop_redis))
    return url


def ensure_emulator(stack: StartedProcesses, port: int) -> str:
    reused = port_answers(port)
    try:
        endpoint, stop = emulator.ensure_emulator(port=port)
    except Exception as exc:  # noqa: BLE001 - any failure here is the step's failure
        raise StepFailed(f"the AWS emulator did not start on :{port}: {exc}",
                         "run `make deps` (installs moto[server]) or start LocalStack on that port") from exc
    detail(f"{'reusing the emulator already on' if reused else 'started moto server on'} :{port}")
    stack.stoppers.append(("the AWS emulator", stop))
    return endpoint


def deploy(endpoint: str) -> dict[str, str]:
    try:
        emulator.deploy_local(endpoint, STAGE, log=detail)
    except Exception as exc:  # noqa: BLE001
        raise StepFailed(f"cdklocal deploy to {endpoint} failed: {exc}",
                         "read the error above; if the CDK CLI or cdklocal is missing, `make deps` installs "
                         "them; then `make up` again") from exc
    try:
        return discovery.runtime_environment(endpoint, STAGE)
    except Exception as exc:  # noqa: BLE001
        raise StepFailed(f"cannot read the deployed stacks from {endpoint}: {exc}",
                         "the deploy may have been partial: run `make up` again") from exc


def print_table(ports: Ports, endpoint: str, redis_url: str, log_dir: Path, ready_s: float) -> None:
    rows = [
        ("web chat page", f"http://localhost:{ports.gateway}/"),
        ("WebSocket (API Gateway event shape)", f"ws://localhost:{ports.gateway}/ws?token=TOKEN"),
        ("management API (@connections)", f"http://localhost:{ports.gateway}/@connections/{{connectionId}}"),
        ("sign in on the page as", f"{identity.DEMO_USER} / {identity.dev_password(identity.DEMO_USER)}"),
        ("invite another user", f"make users ARGS='invite NAME --email EMAIL --endpoint-url {endpoint}'"),
        ("a local-only token for user U", f"GET http://localhost:{ports.gateway}/dev/token?user=U"),
        ("AWS emulator", endpoint),
        ("Redis", redis_url.removeprefix("redis://").removesuffix("/0")),
        ("fake LLM (OpenAI-compatible)", f"http://localhost:{ports.llm}/v1"),
        ("fault injection", f"POST http://localhost:{ports.llm}/_faults  {{\"down\": true}}"),
        ("how the fake LLM writes", f"POST http://localhost:{ports.llm}/_profile  {{\"name\": \"burst\"}}"),
        ("logs", str(log_dir)),
    ]
    width = max(len(what) for what, _ in rows)
    print(f"\ncloud-ia is up in {ready_s:.1f} s:\n", flush=True)
    for what, where in rows:
        print(f"  {what.ljust(width)}  {where}")
    print("\nOpen the page and chat. Ctrl-C stops everything this command started.\n", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Run cloud-ia locally (the `make up` target).")
    parser.add_argument("--gateway-port", type=int, default=int(env.get("GATEWAY_PORT", 8080)))
    parser.add_argument("--emulator-port", type=int, default=int(env.get("EMULATOR_PORT", 4566)))
    parser.add_argument("--redis-port", type=int, default=int(env.get("REDIS_PORT", 6379)))
    parser.add_argument("--llm-port", type=int, default=int(env.get("FAKE_LLM_PORT", 8089)))
    parser.add_argument("--log-dir", default=env.get("CLOUDIA_LOG_DIR", str(ROOT / ".local" / "logs")))
    # docker-compose runs one role per container against services it does not start itself.
    parser.add_argument("--role", choices=ROLES, default=env.get("CLOUDIA_ROLE", "all"),
                        help="all (default): everything; deploy: deploy and exit; gateway, worker, fake-llm: "
                             "run only that one in the foreground against an existing deployment")
    parser.add_argument("--emulator-endpoint", default=env.get("EMULATOR_ENDPOINT", ""),
                        help="use this AWS emulator instead of starting or reusing one on --emulator-port")
    parser.add_argument("--redis-url", default=env.get("CLOUDIA_REDIS_URL", ""),
                        help="use this Redis instead of starting or reusing one on --redis-port")
    parser.add_argument("--gateway-url", default=env.get("CLOUDIA_GATEWAY_URL", ""),
                        help="where the worker finds the gateway's @connections API (default localhost)")
    parser.add_argument("--llm-url", default=env.get("CLOUDIA_FAKE_LLM_URL", ""),
                        help="where the worker finds the fake LLM (default localhost)")
    parser.add_argument("--llm-profile", choices=sorted(fake_llm.PROFILES),
                        default=env.get(fake_llm.PROFILE_ENV, "model"),
                        help="how the fake LLM writes: model (0.5 s to the first token, then 45 tokens/s; the "
                             "default), brisk (the same on a fast clock) or burst (the whole answer at once)")
    return parser.parse_args(argv)


ROLES = ("all", "deploy", "gateway", "worker", "fake-llm")


def run_role(args: argparse.Namespace, ports: Ports) -> int:
    """One service in the foreground (a container's main process), against an existing deployment."""
    if args.role == "fake-llm":
        os.execv(sys.executable, [sys.executable, "-m", "local_runtime.fake_llm", "--host",
                                  os.environ.get("FAKE_LLM_HOST", "127.0.0.1"), "--port", str(ports.llm),
                                  "--profile", args.llm_profile])
    if not args.emulator_endpoint or not args.redis_url:
        raise StepFailed(f"--role {args.role} needs --emulator-endpoint and --redis-url",
                         "give both (docker-compose.yml sets them), or run `make up` for everything")
    endpoint = args.emulator_endpoint
    if args.role == "deploy":
        step(f"deploying the `local` target (stage {STAGE}) to {endpoint}")
        deploy(endpoint)
        step("deployed")
        return 0

    step(f"reading the deployment from {endpoint}")
    runtime_env = {**discovery.runtime_environment(endpoint, STAGE), "REDIS_URL": args.redis_url}
    env = services_env(runtime_env, ports, endpoint, gateway_url=args.gateway_url, llm_url=args.llm_url)
    if args.role == "gateway":
        argv = [sys.executable, "-m", "local_runtime.gateway", "--port", str(ports.gateway)]
    else:
        argv = [sys.executable, "-m", "worker"]
    step(f"running the {args.role}")
    os.execve(sys.executable, argv, child_env(env))
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ports = Ports(args.gateway_port, args.emulator_port, args.redis_port, args.llm_port)
    if args.role != "all":
        try:
            return run_role(args, ports)
        except StepFailed as failure:
            print(f"\nFAILED: {failure.what}\nfix: {failure.fix}\n", file=sys.stderr, flush=True)
            return 1
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = StartedProcesses(log_dir)

    def on_signal(_signum, _frame):
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM alike stop everything this run started, even in the middle of a step.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        # Fail before the deploy, not after it, when a port this run needs is taken.
        for name, port, flag in (("gateway", ports.gateway, "--gateway-port"), ("fake LLM", ports.llm, "--llm-port")):
            if port_answers(port):
                raise StepFailed(f"port {port} for the {name} is already in use",
                                 f"stop what listens on {port} (an earlier `make up`?) or choose another with {flag}")
        if args.emulator_endpoint:
            endpoint = args.emulator_endpoint
            step(f"AWS emulator at {endpoint} (given)")
        else:
            step(f"AWS emulator on :{ports.emulator}")
            endpoint = ensure_emulator(stack, ports.emulator)
        if args.redis_url:
            redis_url = args.redis_url
            step(f"Redis at {redis_url} (given)")
        else:
            step(f"Redis on :{ports.redis}")
            redis_url = ensure_redis(stack, ports.redis)
        step(f"deploying the `local` target (stage {STAGE}) with cdklocal")
        deploy_started = time.monotonic()
        runtime_env = deploy(endpoint)
        detail(f"deployed in {time.monotonic() - deploy_started:.1f} s; queue {runtime_env.get('JOBS_QUEUE_URL', '?')}")
        # Redis is whatever this run found or started, whatever the deployment's default says.
        runtime_env["REDIS_URL"] = redis_url
        identity.LocalUserPool(endpoint, runtime_env["USER_POOL_ID"], runtime_env["USER_POOL_CLIENT_ID"]).ensure_user(
            identity.DEMO_USER)
        detail(f"user pool {runtime_env['USER_POOL_ID']}, with the user {identity.DEMO_USER!r}")
        start_services(stack, runtime_env, ports, aws_endpoint=endpoint,
                       gateway_url=args.gateway_url, llm_url=args.llm_url, llm_profile=args.llm_profile)
        print_table(ports, endpoint, redis_url, log_dir, time.monotonic() - started)
        while True:
            dead = stack.dead_child()
            if dead:
                raise StepFailed(f"{dead.name} stopped (exit {dead.proc.returncode}):\n{dead.tail()}",
                                 f"see {dead.log_path}; fix it and run `make up` again")
            time.sleep(0.5)
    except StepFailed as failure:
        print(f"\nFAILED: {failure.what}\nfix: {failure.fix}\n", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Stopping is bounded (grace, then kill): a second signal must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step("stopping")
        stack.stop()
        step("stopped")


if __name__ == "__main__":
    sys.exit(main())
