"""`python -m cloudia.dlq`: list, inspect and redrive the jobs DLQ (logic and design in `cloudia.dlq`).

    python -m cloudia.dlq list    [--older-than 1h] [--newer-than 1d] [--reason TEXT] [--limit N] [--json]
    python -m cloudia.dlq inspect MESSAGE_ID_OR_JOB_ID [--json]
    python -m cloudia.dlq redrive [filters] [--apply] [--max-messages N] [--journal PATH] [--no-move-task]

Queue URLs come from JOBS_QUEUE_URL and JOBS_DLQ_URL (as `Settings.from_env()` reads them) unless
--queue-url / --dlq-url are given; with JOBS_TABLE set, `inspect` also shows the job's row there, and
`redrive` leaves out (and deletes) the copies of jobs their users retried since (see `cloudia.dlq`).
`redrive` is a dry run unless --apply is given.

Ctrl-C (or SIGTERM) during `redrive --apply` stops after the batch in hand; a second one at once.

Exit codes: 0 done; 1 the counts before and after disagree, a message could not be moved, the run
was stopped early, or the message to inspect is not in the DLQ; 2 bad input (unknown queue, bad duration, missing URL).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from cloudia import aws, dlq, dlq_format
from cloudia.jobs import JobStore
from cloudia.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROGRESS_BAR_WIDTH = 30


def _duration(text: str) -> float:
    try:
        return dlq.parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    queues = argparse.ArgumentParser(add_help=False)
    queues.add_argument("--queue-url", help="jobs queue (default: $JOBS_QUEUE_URL)")
    queues.add_argument("--dlq-url", help="its dead-letter queue (default: $JOBS_DLQ_URL)")
    queues.add_argument("--lease", type=_duration, default=float(dlq.DEFAULT_LEASE_S), metavar="DURATION",
                        help="how long a look or a move holds the messages it received (default: %(default)ss)")

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--older-than", type=_duration, metavar="DURATION",
                         help="only messages at least this old, e.g. 2h")
    filters.add_argument("--newer-than", type=_duration, metavar="DURATION",
                         help="only messages younger than this, e.g. 1d")
    filters.add_argument("--reason", action="append", default=[], metavar="TEXT",
                         help="only messages whose failure reason contains TEXT (case-insensitive; repeatable; "
                              f"{dlq_format.MAX_RECEIVES_REASON!r} selects those the redrive policy moved)")

    parser = argparse.ArgumentParser(
        prog="python -m cloudia.dlq",
        description="List, inspect and move back the messages of the jobs dead-letter queue.",
        epilog="Exit codes: 0 done, 1 counts disagree or something was not moved or found, 2 bad input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,inspect,redrive}")

    listing = commands.add_parser("list", parents=[queues, filters],
                                  help="the DLQ's messages with reason and receive count")
    listing.add_argument("--limit", type=_positive_int, help="look at no more than N messages")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    inspect = commands.add_parser("inspect", parents=[queues], help="one message: its job, age, reason, receive count")
    inspect.add_argument("id", help="the SQS MessageId or the job id")
    inspect.add_argument("--json", action="store_true")

    redrive = commands.add_parser("redrive", parents=[queues, filters],
                                  help="move messages back to the jobs queue (dry run unless --apply)")
    redrive.add_argument("--apply", action="store_true", help="really move them (default: only show what would move)")
    redrive.add_argument("--max-messages", type=_positive_int, help="move no more than N")
    redrive.add_argument("--journal", help="journal of sent ids (default: under $XDG_STATE_HOME/cloudia/dlq-redrive/)")
    redrive.add_argument("--no-move-task", action="store_true",
                         help="do not use SQS StartMessageMoveTask even when moving everything")
    redrive.add_argument("--settle", type=_duration, default=dlq.DEFAULT_SETTLE_S, metavar="DURATION",
                         help="how long to wait for SQS's approximate counts to agree (default: %(default)ss)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    dlq_url = args.dlq_url or settings.jobs_dlq_url
    queue_url = args.queue_url or settings.jobs_queue_url
    if not dlq_url:
        parser.error("no DLQ: give --dlq-url or set JOBS_DLQ_URL")
    if args.command == "redrive" and not queue_url:
        parser.error("no jobs queue to move messages to: give --queue-url or set JOBS_QUEUE_URL")
    sqs = dlq.sqs_client(settings.resilience)
    try:
        if args.command == "list":
            return _list(sqs, dlq_url, _selector(args), args)
        if args.command == "inspect":
            return _inspect(sqs, dlq_url, settings, args)
        return _redrive(sqs, dlq_url, queue_url, _selector(args), args, _job_store(settings))
    except dlq.DlqError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BotoCoreError, ClientError) as error:
        # No credentials, no network, a permission missing: say it in one line, not a traceback.
        print(f"error: SQS call failed: {error}", file=sys.stderr)
        return EXIT_FAILED


def _selector(args) -> dlq.Selector:
    return dlq.Selector(older_than_s=args.older_than, newer_than_s=args.newer_than, reasons=tuple(args.reason))


def _list(sqs, dlq_url: str, selector: dlq.Selector, args) -> int:
    counts = dlq.queue_counts(sqs, dlq_url)
    messages = dlq.look(sqs, dlq_url, selector, limit=args.limit, lease_s=int(args.lease))
    if args.json:
        for message in messages:
            print(json.dumps(message.as_dict(), ensure_ascii=False))
        return EXIT_OK
    print(f"DLQ {dlq.queue_name(dlq_url)}: {counts.total} messages ({counts.visible} visible, "
          f"{counts.in_flight} in flight, {counts.delayed} delayed); showing {len(messages)} ({selector.describe()})")
    _print_table(messages)
    return EXIT_OK


def _print_table(messages: list[dlq.DlqMessage]) -> None:
    if not messages:
        return
    rows = [("MESSAGE ID", "JOB ID", "AGE", "RECEIVES", "REASON")]
    for m in messages:
        job = m.job
        rows.append((m.message_id, job.job_id if job else "(not a job)", dlq.format_duration(m.age_s()),
                     str(m.receive_count), m.failure_reason))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


def _job_store(settings: Settings) -> JobStore | None:
    """The jobs table, when known: a redrive leaves out the copies a retry superseded."""
    if not settings.jobs_table:
        return None
    return JobStore.of(settings, aws.dynamodb(settings.resilience))


def _job_record(settings: Settings, job) -> dict | None:
    """The job's row in the jobs table (its status and failure detail), when the table is known."""
    if not settings.jobs_table:
        return None
    try:
        record = JobStore.of(settings, aws.dynamodb(settings.resilience)).get(job.job_id)
    except (BotoCoreError, ClientError) as error:
        return {"status": f"unreadable ({error})"}
    return record or {"status": "not in the jobs table"}


def _inspect(sqs, dlq_url: str, settings: Settings, args) -> int:
    message = dlq.find(sqs, dlq_url, args.id, lease_s=int(args.lease))
    if message is None:
        print(f"no message or job {args.id!r} in DLQ {dlq.queue_name(dlq_url)}", file=sys.stderr)
        return EXIT_FAILED
    details = message.as_dict()
    job_record = _job_record(settings, message.job) if message.job else None
    details["jobRecord"] = job_record
    if args.json:
        print(json.dumps(details, ensure_ascii=False, indent=2))
        return EXIT_OK
    sent_at = datetime.fromtimestamp(message.sent_at_ms / 1000, timezone.utc).isoformat(timespec="seconds")
    print(f"message id     {message.message_id}")
    print(f"reason         {message.failure_reason}")
    print(f"receive count  {message.receive_count} (before this look)")
    print(f"age            {dlq.format_duration(message.age_s())} (sent {sent_at})")
    job = message.job
    if job is None:
        print(f"body (not a job)  {message.body}")
    else:
        created = datetime.fromtimestamp(job.created_at_ms / 1000, timezone.utc).isoformat(timespec="seconds")
        print(f"job id         {job.job_id}")
        print(f"user           {job.user_id}")
        print(f"conversation   {job.conversation_id}")
        print(f"client msg id  {job.client_message_id}")
        print(f"created        {created}")
        print(f"message        {job.message}")
        if job_record is not None:
            print(f"jobs table     {job_record.get('status', '?')}"
                  + (f" ({job_record['detail']})" if job_record.get("detail") else ""))
    for name, value in sorted(details["messageAttributes"].items()):
        print(f"attribute      {name} = {value}")
    return EXIT_OK


class StderrProgress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, printed once otherwise)."""

    def __init__(self, label: str):
        self._label = label
        self._tty = sys.stderr.isatty()
        self._last: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self._last = (done, total)
        if self._tty:
            sys.stderr.write("\r" + self._line(done, total))
            sys.stderr.flush()

    def _line(self, done: int, total: int | None) -> str:
        if not total:
            return f"{self._label} {done}"
        filled = min(PROGRESS_BAR_WIDTH, PROGRESS_BAR_WIDTH * done // total)
        return f"{self._label} [{'#' * filled}{'.' * (PROGRESS_BAR_WIDTH - filled)}] {done}/{total}"

    def close(self) -> None:
        if self._last is None:
            return
        sys.stderr.write(("\r" if self._tty else "") + self._line(*self._last) + "\n")
        sys.stderr.flush()


class StopBetweenBatches:
    """Ctrl-C or SIGTERM asks the run to stop after the batch in hand (sent, journaled, deleted); a
    second signal stops at once (the journal still keeps a re-run from sending anything twice)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopBetweenBatches":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, _signum, _frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (signal again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __call__(self) -> bool:
        return self.requested


def _redrive(sqs, dlq_url: str, queue_url: str, selector: dlq.Selector, args, jobs: JobStore | None = None) -> int:
    progress = StderrProgress("redrive")
    try:
        with StopBetweenBatches() as stop:
            report = dlq.redrive(
                sqs, dlq_url, queue_url, selector, apply=args.apply, journal_path=args.journal,
                lease_s=int(args.lease), max_messages=args.max_messages, use_move_task=not args.no_move_task,
                settle_s=args.settle, progress=progress, stop_requested=stop, jobs=jobs,
            )
    finally:
        progress.close()
    dlq_name, jobs_name = dlq.queue_name(dlq_url), dlq.queue_name(queue_url)
    print(f"before: DLQ {dlq_name} {report.dlq_before.total}, jobs queue {jobs_name} {report.jobs_before.total}")
    if not report.applied:
        print(f"dry run: would move {len(report.selected)} of {report.dlq_before.total} ({selector.describe()})")
        _print_table(report.selected)
        if report.superseded:
            print(f"and would leave out {len(report.superseded)} whose job its user retried since "
                  "(deleted with --apply): " + ", ".join(m.message_id for m in report.superseded))
        print("nothing moved; run again with --apply to move them")
    else:
        via = report.method + (f"; {report.fallback_reason}" if report.fallback_reason else "")
        print(f"moved {report.removed_from_dlq - len(report.superseded)} ({selector.describe()}) via {via}")
        if report.stopped_early:
            print("  stopped early on request; run again to move the rest", file=sys.stderr)
        if report.superseded:
            print(f"  left out and deleted {len(report.superseded)} whose job its user retried since "
                  "(the retry runs it): " + ", ".join(m.message_id for m in report.superseded))
        if report.finished_from_journal:
            print(f"  of which {report.finished_from_journal} had been sent by an interrupted run "
                  "and were only deleted from the DLQ (not sent again)")
        for failure in report.send_failures:
            print(f"  not moved: {failure}", file=sys.stderr)
        for failure in report.delete_failures:
            print(f"  sent, not yet deleted from the DLQ (a re-run deletes it): {failure}", file=sys.stderr)
    dlq_after, jobs_after = report.dlq_after, report.jobs_after
    if dlq_after is None or jobs_after is None:
        raise RuntimeError("the redrive report has no counts after the run")  # dlq.redrive() always counts them
    verdict = "counts agree" if report.counts_agree else "COUNTS DISAGREE"
    print(f"after:  DLQ {dlq_name} {dlq_after.total} (expected {report.dlq_expected_after}: {verdict}), "
          f"jobs queue {jobs_name} {jobs_after.total}")
    if not report.counts_agree:
        print("error: the DLQ count after the run is not its count before minus what was moved; "
              "did something else write to or read from the DLQ meanwhile?", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
