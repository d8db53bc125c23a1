"""US dollars per million answered messages, LLM excluded, from counts that `bench/aws_requests.py` measures.

    .venv/bin/python bench/price_per_message.py [--messages 10] [--burst] [--jobs-per-task-s X]
        [--session-minutes 15] [--messages-per-session 10] [--ping-interval-s S] [--xray-sampled 1.0]
        [--stage dev] [--prices bench/prices.json] [--answer-tokens N] [--first-token-ms 500] [--tokens-per-s 45]

Runs `aws_requests.measure` (the real sendMessage handler and worker against moto, Redis, the fake LLM
and a `@connections` stand-in; see that script), then prices, per answered message:
- Lambda: the sendMessage invocation, and a share of the session's (authorizer, `$connect`,
  `$disconnect`, a `ping` every `--ping-interval-s`, by default the page's interval read from
  web/app.js). Duration is the median wall time of each handler measured in this process, billed per
  1 ms at the configured memory (stacks/config.py `function_memory_mb`, arm64).
- API Gateway WebSocket: the frames in and out (the sendMessage frame, its `queued` reply, every push
  measured at the `@connections` API, pings and pongs), each in 32 KB increments, and the connection
  minutes of an assumed session (`--session-minutes`, `--messages-per-session`).
- DynamoDB: write and read units from the measured item sizes (transactional writes count double),
  and storage and point-in-time recovery for the items each message leaves, kept for their TTL.
- SQS: the requests measured, each 64 KB chunk counted.
- CloudWatch Logs: the bytes each handler and the worker wrote (measured), Lambda's START/END/REPORT
  lines and the API Gateway access log lines (both rendered from their formats at the measured values),
  ingested, and stored for the log retention (uncompressed: an upper bound).
- X-Ray: one trace per invocation times `--xray-sampled` (the functions trace actively).
- NAT gateway: the bytes of the calls that do not go through the VPC's free gateway endpoints (SQS,
  `@connections`) and the worker's logs, measured as HTTP headers and bodies (TLS not counted). The
  LLM's own traffic is excluded with the LLM.
- Fargate: vCPU and memory of the worker's task (stacks/config.py) for the time one job takes of a task
  at `--jobs-per-task-s`; by default that capacity is measured: the smaller of worker concurrency /
  the time a job holds its slot (receive to delete), and the task's vCPU / the worker's CPU per job.
Then the fixed monthly costs (NAT gateways, public IPv4, ElastiCache nodes, the always-running worker
tasks, keys, secrets, alarms, an idle worker's polls) from the synthesized template of `--stage`
(`make synth TARGET=aws STAGE=...`) when present, printed apart: they do not scale with messages.

What bounds the figures: the counts are our code's (see bench/aws_requests.py); the durations and the
worker's CPU are this machine's, against moto on the same 2 cores, not Lambda's or Graviton's, so the
duration and Fargate lines are estimates of the order of magnitude. The prices are from bench/prices.json,
known in 2025 and read from nowhere at run time.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PRICES = BENCH / "prices.json"
# Priced per million answered messages.
MESSAGES = 1_000_000
GB = 1024 ** 3
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 365.25 / 12
# DynamoDB counts 100 bytes of overhead per item in a table's size.
DYNAMODB_ITEM_OVERHEAD_BYTES = 100
# Where nothing synthesized says otherwise: the VPC's gateway endpoints (free; architecture.md).
GATEWAY_ENDPOINT_SERVICES = frozenset({"dynamodb", "s3"})
# SQS's default KmsDataKeyReusePeriodSeconds: one data key per queue and caller for this long.
SQS_DATA_KEY_REUSE_S = 300


# -- the arithmetic -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantity:
    """What one answered message (or one month, for fixed costs) uses of one price."""

    item: str
    price: str  # a key of prices.json's "prices"
    amount: float  # in the price's unit


@dataclass(frozen=True)
class LineItem:
    item: str
    price: str
    amount: float
    unit: str
    usd_per_unit: float
    usd: float  # amount x usd_per_unit x scale


def price_lines(quantities: list[Quantity], prices: dict, scale: float = MESSAGES) -> list[LineItem]:
    """Each quantity at its price, `scale` times (a million messages by default; 1 for a month)."""
    lines = []
    for q in quantities:
        price = prices[q.price]
        per_unit = price["usd"] / price["per"]
        lines.append(LineItem(q.item, q.price, q.amount, price["unit"], per_unit, q.amount * per_unit * scale))
    return lines


def total_usd(lines: list[LineItem]) -> float:
    return sum(line.usd for line in lines)


def load_prices(path: Path = PRICES) -> dict:
    return json.loads(path.read_text())


# -- what a message uses ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Assumptions:
    session_minutes: float
    messages_per_session: float
    ping_interval_s: float
    xray_sampled: float
    jobs_per_task_s: float | None  # None: measured


@dataclass
class Stacks:
    """What the synthesized templates of a stage say (None where no template was found)."""

    stage: str
    found: bool = False
    synthesized_at: str = ""
    access_log_format: str | None = None
    gateway_endpoints: frozenset = GATEWAY_ENDPOINT_SERVICES
    pitr: bool = True
    counts: dict = field(default_factory=dict)  # resource type -> count
    cache_nodes: list = field(default_factory=list)  # (node type, nodes)
    kms_queues: int = 0


def read_stacks(stage: str) -> Stacks:
    stacks = Stacks(stage)
    templates = sorted(glob.glob(str(ROOT / f"cdk.out.aws-{stage}" / "*.template.json")))
    if not templates:
        return stacks
    stacks.found = True
    stacks.synthesized_at = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(Path(t).stat().st_mtime
                                                                                for t in templates)))
    endpoints, pitr = set(), []
    for path in templates:
        for resource in json.loads(Path(path).read_text()).get("Resources", {}).values():
            kind, props = resource["Type"], resource.get("Properties", {})
            stacks.counts[kind] = stacks.counts.get(kind, 0) + 1
            if kind == "AWS::ApiGatewayV2::Stage" and props.get("AccessLogSettings"):
                stacks.access_log_format = props["AccessLogSettings"].get("Format")
            elif kind == "AWS::EC2::VPCEndpoint" and props.get("VpcEndpointType") == "Gateway":
                endpoints.add(json.dumps(props.get("ServiceName")).rsplit(".", 1)[-1].strip('"]} '))
            elif kind == "AWS::DynamoDB::Table":
                pitr.append(bool(props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")))
            elif kind == "AWS::ElastiCache::ReplicationGroup":
                stacks.cache_nodes.append((props.get("CacheNodeType"), int(props.get("NumCacheClusters", 1))))
            elif kind == "AWS::SQS::Queue" and props.get("KmsMasterKeyId"):
                stacks.kms_queues += 1
    if endpoints:
        stacks.gateway_endpoints = frozenset(endpoints)
    if pitr:
        stacks.pitr = any(pitr)
    return stacks


def access_log_format(stacks: Stacks) -> str:
    if stacks.access_log_format:
        return stacks.access_log_format
    import os

    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # as the Makefile
    from stacks.components.websocket_api import ACCESS_LOG_FORMAT

    return ACCESS_LOG_FORMAT


def access_log_line_bytes(log_format: str, route: str, event_type: str, status: int, latency_ms: float) -> int:
    """One access log line of API Gateway, rendered from the stage's format ("-" for what is empty)."""
    from local_runtime.apigw_events import new_connection_id

    values = {
        "requestId": new_connection_id(), "connectionId": new_connection_id(), "routeKey": route,
        "eventType": event_type, "status": str(status), "identity.sourceIp": "203.0.113.10",
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "integrationLatency": str(round(latency_ms)), "error.message": "-", "authorizer.error": "-",
    }
    line = re.sub(r"\$context\.([A-Za-z.]+)", lambda match: values.get(match.group(1), "-"), log_format)
    return len(line.encode()) + 1


def lambda_platform_log_bytes(duration_ms: float, memory_mb: int, traced: bool) -> int:
    """Lambda's own lines for one invocation (text format): START, END, REPORT, and XRAY when traced."""
    request_id = str(uuid.uuid4())
    lines = [f"START RequestId: {request_id} Version: $LATEST\n", f"END RequestId: {request_id}\n",
             f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
             f"{math.ceil(duration_ms)} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {memory_mb // 2} MB\t\n"]
    if traced:
        lines.append(f"XRAY TraceId: 1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}\tSegmentId: "
                     f"{uuid.uuid4().hex[:16]}\tSampled: true\t\n")
    return sum(len(line.encode()) for line in lines)


def page_ping_interval_s() -> float | None:
    """The chat page's heartbeat (web/app.js PING_INTERVAL_MS), in seconds."""
    match = re.search(r"PING_INTERVAL_MS\s*=\s*setting\(\s*\"ping_ms\"\s*,\s*(\d+)\s*\)",
                      (ROOT / "web" / "app.js").read_text())
    return int(match.group(1)) / 1000 if match else None


def ttl_days(resilience, table: str) -> float | None:
    """How long a table's items live: its `<name>_ttl_days` or `<name>_ttl_s` setting."""
    for name in (table, table.rstrip("s")):
        if hasattr(resilience, f"{name}_ttl_days"):
            return float(getattr(resilience, f"{name}_ttl_days"))
        if hasattr(resilience, f"{name}_ttl_s"):
            return getattr(resilience, f"{name}_ttl_s") / 86400
    return None


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class Usage:
    """A message's quantities, and what was assumed or derived on the way (for printing)."""

    quantities: list[Quantity]
    notes: list[str]
    capacity_jobs_per_task_s: float


def message_usage(m, config, a: Assumptions, stacks: Stacks) -> Usage:
    """Measured counts (an `aws_requests.Measurement`) turned into each price's quantity per answer."""
    from aws_requests import websocket_messages

    n = m.answered
    notes: list[str] = []
    memory_gb = config.function_memory_mb / 1024
    pings = a.session_minutes * 60 / a.ping_interval_s
    share = 1 / a.messages_per_session
    # Per answered message: how many times each function runs (the session's spread over its messages).
    runs = {"sendMessage": len(m.invocations_of("sendMessage")) / n, "authorizer": share, "connect": share,
            "disconnect": share, "ping": pings * share}
    median_ms = {role: _median([i.wall_ms for i in m.invocations_of(role)]) for role in runs}
    billed_gb_s = {role: math.ceil(median_ms[role]) / 1000 * memory_gb for role in runs}
    session_roles = ("authorizer", "connect", "disconnect", "ping")
    q: list[Quantity] = [
        Quantity("Lambda requests: sendMessage", "lambda_requests", runs["sendMessage"]),
        Quantity(f"Lambda requests: the session's (authorizer, $connect, $disconnect, {pings:g} pings) / "
                 f"{a.messages_per_session:g}", "lambda_requests", sum(runs[r] for r in session_roles)),
        Quantity(f"Lambda duration: sendMessage, {math.ceil(median_ms['sendMessage'])} ms at "
                 f"{config.function_memory_mb} MB", "lambda_arm64_gb_s",
                 runs["sendMessage"] * billed_gb_s["sendMessage"]),
        Quantity("Lambda duration: the session's, "
                 + ", ".join(f"{r} {math.ceil(median_ms[r])} ms" for r in session_roles), "lambda_arm64_gb_s",
                 sum(runs[r] * billed_gb_s[r] for r in session_roles)),
    ]
    sends = m.invocations_of("sendMessage")
    frames_in_out = _median([websocket_messages(i.frame_bytes) + websocket_messages(i.reply_bytes) for i in sends])
    pushes = m.pushes()
    push_messages = sum(websocket_messages(c.payload_bytes) for c in pushes) / n
    by_event: dict[str, int] = {}
    for c in pushes:
        by_event[c.frame_event] = by_event.get(c.frame_event, 0) + 1
    ping_frames = _median([websocket_messages(i.frame_bytes) + websocket_messages(i.reply_bytes)
                           for i in m.invocations_of("ping")])
    q += [
        Quantity("API Gateway messages: the sendMessage frame in, `queued` out", "apigw_websocket_messages",
                 frames_in_out),
        Quantity("API Gateway messages: pushes (" + ", ".join(f"{e} {c / n:.1f}" for e, c in sorted(by_event.items()))
                 + ")", "apigw_websocket_messages", push_messages),
        Quantity(f"API Gateway messages: the session's pings and pongs / {a.messages_per_session:g}",
                 "apigw_websocket_messages", pings * ping_frames * share),
        Quantity(f"API Gateway connection minutes: {a.session_minutes:g} min / {a.messages_per_session:g}",
                 "apigw_websocket_connection_minutes", a.session_minutes * share),
    ]
    calls = m.per_message_calls()
    q += [
        Quantity("DynamoDB write units (item sizes measured)", "dynamodb_write_request_units",
                 sum(c.write_units for c in calls) / n),
        Quantity("DynamoDB read units (item sizes measured)", "dynamodb_read_request_units",
                 sum(c.read_units for c in calls) / n),
    ]
    gb_months, kept = 0.0, []
    for table, sizes in sorted(m.stored_items.items()):
        days = ttl_days(config.resilience, table)
        if days is None:
            days = DAYS_PER_MONTH
            notes.append(f"the {table} table has no TTL setting: its items are priced as kept a month")
        stored = (sum(sizes) + DYNAMODB_ITEM_OVERHEAD_BYTES * len(sizes)) / n
        gb_months += stored / GB * days / DAYS_PER_MONTH
        kept.append(f"{table} {stored:.0f} B for {days:g} d")
    q.append(Quantity("DynamoDB storage while the items live: " + ", ".join(kept), "dynamodb_storage_gb_month",
                      gb_months))
    if stacks.pitr:
        q.append(Quantity("DynamoDB point-in-time recovery, the same bytes", "dynamodb_pitr_gb_month", gb_months))
    q.append(Quantity("SQS requests (64 KB chunks)", "sqs_standard_requests",
                      sum(c.billed_requests for c in calls if c.service == "sqs") / n))

    traced = a.xray_sampled > 0
    fn_log_bytes = sum(runs[r] * (_median([i.log_bytes for i in m.invocations_of(r)])
                                  + lambda_platform_log_bytes(median_ms[r], config.function_memory_mb, traced))
                       for r in runs)
    log_format = access_log_format(stacks)
    routes = {"sendMessage": ("sendMessage", "MESSAGE"), "ping": ("ping", "MESSAGE"),
              "connect": ("$connect", "CONNECT"), "disconnect": ("$disconnect", "DISCONNECT")}
    access_bytes = sum(runs[r] * access_log_line_bytes(log_format, route, kind, 200, median_ms[r])
                       for r, (route, kind) in routes.items())
    worker_log_bytes = m.worker_log_bytes / n
    log_gb = (fn_log_bytes + access_bytes + worker_log_bytes) / GB
    q += [
        Quantity(f"CloudWatch Logs: the functions' ({fn_log_bytes:.0f} B with Lambda's own lines)",
                 "cloudwatch_logs_ingestion_gb", fn_log_bytes / GB),
        Quantity(f"CloudWatch Logs: API Gateway access logs ({access_bytes:.0f} B)", "cloudwatch_logs_ingestion_gb",
                 access_bytes / GB),
        Quantity(f"CloudWatch Logs: the worker's ({worker_log_bytes:.0f} B)", "cloudwatch_logs_ingestion_gb",
                 worker_log_bytes / GB),
        Quantity(f"CloudWatch Logs storage, {config.log_retention_days} days (uncompressed: at most)",
                 "cloudwatch_logs_storage_gb_month", log_gb * config.log_retention_days / DAYS_PER_MONTH),
        Quantity(f"X-Ray traces: one per invocation, {a.xray_sampled:.0%} sampled", "xray_traces_recorded",
                 sum(runs.values()) * a.xray_sampled),
    ]
    nat_bytes = sum(c.request_bytes + c.response_bytes for c in calls
                    if c.service not in stacks.gateway_endpoints) / n + worker_log_bytes
    q.append(Quantity(f"NAT gateway: {nat_bytes / 1024:.1f} KB of SQS, @connections and worker logs",
                      "nat_gateway_gb_processed", nat_bytes / GB))

    vcpu, task_gb = config.worker_cpu / 1024, config.worker_memory_mb / 1024
    hold_s = statistics.median(m.job_hold_s) if m.job_hold_s else float("nan")
    cpu_per_job_s = m.worker_cpu_s / n
    by_slots = m.worker_concurrency / hold_s
    by_cpu = vcpu / cpu_per_job_s if cpu_per_job_s > 0 else float("inf")
    if a.jobs_per_task_s is not None:
        capacity = a.jobs_per_task_s
        notes.append(f"worker capacity {capacity:g} jobs per task-second (given; measured: {by_slots:.2f} by its "
                     f"{m.worker_concurrency} slots, {by_cpu:.2f} by CPU)")
    else:
        capacity = min(by_slots, by_cpu)
        notes.append(f"worker capacity {capacity:.2f} jobs per task-second, measured: the smaller of "
                     f"{m.worker_concurrency} slots / {hold_s:.2f} s a job holds one = {by_slots:.2f}, and "
                     f"{vcpu:g} vCPU / {cpu_per_job_s * 1000:.0f} CPU ms a job (this machine) = {by_cpu:.2f}")
    q += [
        Quantity(f"Fargate vCPU: {vcpu:g} vCPU / {capacity:.2f} jobs per s", "fargate_arm64_vcpu_hours",
                 vcpu / capacity / 3600),
        Quantity(f"Fargate memory: {task_gb:g} GB / {capacity:.2f} jobs per s", "fargate_arm64_gb_hours",
                 task_gb / capacity / 3600),
    ]
    return Usage(q, notes, capacity)


def monthly_fixed(config, stacks: Stacks, prices: dict) -> tuple[list[Quantity], list[str]]:
    """What runs whatever the traffic, per month; from the stage's synthesized templates."""
    from cloudia.settings import Settings

    q: list[Quantity] = []
    notes: list[str] = []
    vcpu, task_gb = config.worker_cpu / 1024, config.worker_memory_mb / 1024
    tasks = config.worker_min_tasks
    q += [Quantity(f"Fargate: {tasks} worker task(s) always running, vCPU", "fargate_arm64_vcpu_hours",
                   tasks * vcpu * HOURS_PER_MONTH),
          Quantity(f"Fargate: {tasks} worker task(s) always running, memory", "fargate_arm64_gb_hours",
                   tasks * task_gb * HOURS_PER_MONTH)]
    minutes = HOURS_PER_MONTH * 60
    polls = 60 / Settings().worker_poll_wait_s + 60 / config.resilience.dlq_sweep_s
    q.append(Quantity(f"SQS: an idle task's long polls and DLQ sweeps ({polls:g} a minute per task)",
                      "sqs_standard_requests", tasks * polls * minutes))
    if not stacks.found:
        notes.append(f"no synthesized template in cdk.out.aws-{stacks.stage}/: run `make synth TARGET=aws "
                     f"STAGE={stacks.stage}` for the NAT gateways, ElastiCache, keys, secrets and alarms")
        q.append(Quantity(f"NAT gateways: {config.nat_gateways} (stacks/config.py)", "nat_gateway_hours",
                          config.nat_gateways * HOURS_PER_MONTH))
        return q, notes
    counts = stacks.counts
    q.append(Quantity(f"NAT gateways: {counts.get('AWS::EC2::NatGateway', 0)}", "nat_gateway_hours",
                      counts.get("AWS::EC2::NatGateway", 0) * HOURS_PER_MONTH))
    q.append(Quantity(f"public IPv4 addresses (Elastic IPs): {counts.get('AWS::EC2::EIP', 0)}", "public_ipv4_hours",
                      counts.get("AWS::EC2::EIP", 0) * HOURS_PER_MONTH))
    for node_type, nodes in stacks.cache_nodes:
        key = f"elasticache_{node_type}_hours"
        if key in prices:
            q.append(Quantity(f"ElastiCache: {nodes} x {node_type}", key, nodes * HOURS_PER_MONTH))
        else:
            notes.append(f"ElastiCache {nodes} x {node_type}: no price in prices.json")
    q += [Quantity(f"KMS keys: {counts.get('AWS::KMS::Key', 0)}", "kms_key_months", counts.get("AWS::KMS::Key", 0)),
          Quantity(f"Secrets Manager secrets: {counts.get('AWS::SecretsManager::Secret', 0)}",
                   "secrets_manager_secret_months", counts.get("AWS::SecretsManager::Secret", 0)),
          Quantity(f"CloudWatch alarms: {counts.get('AWS::CloudWatch::Alarm', 0)}", "cloudwatch_alarm_months",
                   counts.get("AWS::CloudWatch::Alarm", 0)),
          Quantity(f"CloudWatch dashboards: {counts.get('AWS::CloudWatch::Dashboard', 0)} (free within an "
                   "account's first three)", "cloudwatch_dashboard_months",
                   counts.get("AWS::CloudWatch::Dashboard", 0))]
    if stacks.kms_queues:
        per_caller = HOURS_PER_MONTH * 3600 / SQS_DATA_KEY_REUSE_S
        callers = 2  # the sendMessage function and the worker's task role
        q.append(Quantity(f"KMS requests, at most: {stacks.kms_queues} queues x {callers} callers, a data key "
                          f"per {SQS_DATA_KEY_REUSE_S} s each", "kms_requests",
                          stacks.kms_queues * callers * per_caller))
        notes.append("KMS requests grow with time and callers, not messages: the queues reuse a data key for "
                     f"{SQS_DATA_KEY_REUSE_S} s and DynamoDB caches its table key, so none is priced per message")
    else:
        notes.append(f"no customer-managed key encrypts the {stacks.stage} stage's queues or tables "
                     "(prod's does): no KMS request per message")
    return q, notes


# -- printing -----------------------------------------------------------------------------------------
def _amount(value: float) -> str:
    return f"{value:.4g}" if value < 1000 else f"{value:,.0f}"


def print_lines(lines: list[LineItem], scale_label: str) -> None:
    width = max(len(line.item) for line in lines)
    print(f"  {'item':<{width}}  {'quantity':>11}  {'unit':<20} {scale_label:>14}")
    for line in lines:
        print(f"  {line.item:<{width}}  {_amount(line.amount):>11}  {line.unit:<20} {line.usd:>14.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--jobs-per-task-s", type=float, default=None,
                        help="the worker task's capacity (default: measured)")
    parser.add_argument("--session-minutes", type=float, default=15)
    parser.add_argument("--messages-per-session", type=float, default=10)
    parser.add_argument("--ping-interval-s", type=float, default=None, help="default: the page's (web/app.js)")
    parser.add_argument("--xray-sampled", type=float, default=1.0,
                        help="share of invocations traced (Lambda traces the first each second and 5%% of the rest)")
    parser.add_argument("--stage", choices=("dev", "prod"), default="dev")
    parser.add_argument("--prices", type=Path, default=PRICES)
    parser.add_argument("--first-token-ms", type=int, default=500)
    parser.add_argument("--tokens-per-s", type=float, default=45.0)
    parser.add_argument("--answer-tokens", type=int, default=None)
    args = parser.parse_args(argv)

    import aws_requests
    from stacks.config import AppConfig

    table = load_prices(args.prices)
    prices = table["prices"]
    config = AppConfig.from_context({**json.loads((ROOT / "cdk.json").read_text())["context"], "stage": args.stage,
                                     "target": "aws"})
    ping_s = args.ping_interval_s or page_ping_interval_s()
    if not ping_s:
        parser.error("web/app.js names no PING_INTERVAL_MS: give --ping-interval-s")
    assumptions = Assumptions(args.session_minutes, args.messages_per_session, ping_s, args.xray_sampled,
                              args.jobs_per_task_s)
    stacks = read_stacks(args.stage)
    print("measuring (bench/aws_requests.py) ...", flush=True)
    m = aws_requests.measure(args.messages, args.burst, args.first_token_ms, args.tokens_per_s, args.answer_tokens)
    usage = message_usage(m, config, assumptions, stacks)
    lines = price_lines(usage.quantities, prices)

    shown = args.prices.relative_to(ROOT) if args.prices.resolve().is_relative_to(ROOT) else args.prices
    print(f"US dollars per million answered messages, the LLM excluded ({table['region']}, stage {args.stage}, "
          f"prices as of {table['as_of']}: {shown})")
    print(f"measured: {aws_requests.describe_run(m)}; answered {m.answered} of {m.messages}")
    print("assumed:")
    print(f"  a session: {args.session_minutes:g} minutes connected, {args.messages_per_session:g} messages, a ping "
          f"every {ping_s:g} s" + (" (web/app.js)" if not args.ping_interval_s else ""))
    print(f"  X-Ray: {args.xray_sampled:.0%} of invocations traced (Lambda's default sampling traces the first "
          "request each second and 5% of the rest: nearly every one at low traffic)")
    print(f"  Lambda: {config.function_memory_mb} MB arm64 (stacks/config.py); durations are medians measured in "
          "this process against moto, not on Lambda")
    for note in usage.notes:
        print(f"  {note}")
    print_lines(lines, "USD / 1M msgs")
    print(f"  {'total':<{max(len(x.item) for x in lines)}}  {'':>11}  {'':<20} {total_usd(lines):>14.2f}")
    print(f"  = {total_usd(lines) / MESSAGES * 1000:.4f} USD per thousand answered messages")

    fixed, fixed_notes = monthly_fixed(config, stacks, prices)
    fixed_lines = price_lines(fixed, prices, scale=1)
    print(f"fixed monthly costs, whatever the traffic (stage {args.stage}"
          + (f", from cdk.out.aws-{args.stage}/ synthesized {stacks.synthesized_at}" if stacks.found else "") + "):")
    for note in fixed_notes:
        print(f"  {note}")
    print_lines(fixed_lines, "USD / month")
    print(f"  {'total':<{max(len(x.item) for x in fixed_lines)}}  {'':>11}  {'':<20} {total_usd(fixed_lines):>14.2f}")
    break_even = total_usd(fixed_lines) / (total_usd(lines) / MESSAGES) if total_usd(lines) else float("inf")
    print(f"  the fixed costs equal the per-message ones at {break_even:,.0f} answered messages a month")


if __name__ == "__main__":
    main()
