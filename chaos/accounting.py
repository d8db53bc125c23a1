"""What became of every message: the table a scenario prints, from the clients' ledger, the jobs table,
the history, the DLQ and the fake LLM's ledger of completions served.

- answered: an `answer` event reached the client, or the job's row reads ANSWERED (the answer is stored
  first, so a client that was away reads it from the history on reconnect);
- in DLQ (user told): the job is in the DLQ, its row reads FAILED and its user was told (an `error`
  event about it, or the ERROR entry the history shows on reconnect);
- lost: accepted and neither of the above;
- duplicated: a job charged twice for an answer a worker had kept (more than one completion served
  for the job's unique text, and the worker's log shows it kept a first one), or two different answers
  received for it;
- unkept by a killed worker, recalled: charged twice, but no worker had kept the first answer: the
  provider wrote its end into the socket of a worker killed before it read it, or before it kept the
  text (`CompletedAnswers`). To the worker that is a cut call, recalled once (and counted in the
  recalls); reported, not a duplicate.
Messages refused at the door (an `error` event and no job) are counted apart: they were never accepted.
A message whose client gave up resending before it heard `queued`, but which the system accepted (the
history holds its unique text), counts as accepted like any other.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cloudia.history import ERROR
from cloudia.jobs import ANSWERED, FAILED
from chaos.clients import Ledger
from chaos.harness import System

SETTLE_POLL_S = 1.0


@dataclass
class Outcome:
    scenario: str
    sent: int = 0
    refused: int = 0
    accepted: int = 0
    answered: int = 0
    answered_live: int = 0
    dlq_told: int = 0
    lost: int = 0
    duplicated: int = 0
    charged_twice: int = 0
    unkept_recalled: int = 0
    two_answers: int = 0
    lost_jobs: list[str] = field(default_factory=list)
    # jobId -> its failure class, of each job in the DLQ; jobId -> its LLM calls that did not finish
    dead_letters: dict[str, str] = field(default_factory=dict)
    unfinished_calls: Counter[str] = field(default_factory=Counter)
    duplicated_jobs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # of any shape: counts, tables, raw values
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and all(self.checks.values())


async def settle(system: System, ledger: Ledger, deadline_s: float) -> bool:
    """Wait until every accepted job reads ANSWERED or FAILED (True), or the deadline passes (False)."""
    loop = asyncio.get_running_loop()
    end = time.monotonic() + deadline_s
    while True:
        states = await loop.run_in_executor(None, system.job_states)
        pending = [j for j in ledger.by_job if states.get(j) not in (ANSWERED, FAILED)]
        if not pending:
            await asyncio.sleep(SETTLE_POLL_S)  # the last pushes are on their way
            return True
        if time.monotonic() > end:
            return False
        await asyncio.sleep(SETTLE_POLL_S)


def account(scenario: str, system: System, ledger: Ledger) -> Outcome:
    # The tally is taken with the worker stopped: its DLQ sweep would lease messages from under it. A
    # sweep cut short by the stop leaves what it leased hidden for the sweep's lease: wait it out.
    system.stop_worker()
    system.wait_dlq_visible()
    states = system.job_states()
    roles, user_messages = system.history()
    in_dlq = system.dlq_jobs()
    served = system.llm_served()
    completions, completed_at = served["completions"], served["completed_at"]
    worker_kept = system.answers_the_workers_kept()
    out = Outcome(scenario, sent=len(ledger.sent), dead_letters=in_dlq)
    out.figures["completions in the fake LLM's ledger"] = sum(completions.values())
    out.figures["whole answers the workers kept (their logs)"] = sum(worker_kept.values())
    out.figures["in the DLQ, by failure class"] = dict(Counter(in_dlq.values()))
    refused_by_reason: Counter[str] = Counter()
    accepted_unacknowledged = 0
    for sent in ledger.sent:
        if not sent.accepted and sent.text in user_messages:
            # The client gave up resending before it heard `queued`, but the message was accepted:
            # it is accounted for like any other (each text is unique).
            ledger.accept(sent, user_messages[sent.text])
            accepted_unacknowledged += 1
        job = sent.job_id
        if job is None:  # not accepted
            out.refused += 1
            refused_by_reason[sent.ack.removeprefix("refused:")] += 1
            continue
        out.accepted += 1
        if sent.answers or states.get(job) == ANSWERED:
            out.answered += 1
            out.answered_live += bool(sent.answers) and not sent.answered_by_history
        elif job in in_dlq and states.get(job) == FAILED and (sent.errors or ERROR in roles.get(job, ())):
            out.dlq_told += 1
        else:
            out.lost += 1
            out.lost_jobs.append(f"{job} (row {states.get(job)}, in DLQ {job in in_dlq}, errors {sent.errors})")
        charged = completions.get(sent.text, 0)
        out.unfinished_calls[job] = len(served["attempts"].get(sent.text, [])) - charged
        distinct = len(set(sent.answers))
        if charged > 1 and worker_kept[job] <= 1 and distinct <= 1:
            out.unkept_recalled += 1
        elif charged > 1 or distinct > 1:
            out.duplicated += 1
            out.charged_twice += charged > 1
            out.two_answers += distinct > 1
            times = ", ".join(time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"
                              for t in completed_at.get(sent.text, []))
            out.duplicated_jobs.append(f"{job}: {charged} completions (at {times} UTC), {distinct} distinct answers")
    out.figures["answers paid twice because a worker was killed before it kept the first (recalled)"] = \
        out.unkept_recalled
    out.figures["refused at the door (no job), by reason"] = dict(refused_by_reason)
    out.figures["accepted though the client gave up before hearing `queued` (found in the history)"] = \
        accepted_unacknowledged
    return out


def percentiles_ms(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {}
    ms = sorted(v * 1000 for v in values_s)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(ms[-1], 1), "n": len(ms)}


def render(outcome: Outcome) -> str:
    header = ["sent", "refused", "accepted", "answered", "in DLQ (user told)", "lost", "duplicated"]
    values = [outcome.sent, outcome.refused, outcome.accepted, outcome.answered, outcome.dlq_told, outcome.lost,
              outcome.duplicated]
    widths = [max(len(h), len(str(v))) for h, v in zip(header, values)]
    lines = [f"== scenario {outcome.scenario}: {'PASS' if outcome.ok else 'FAIL'}",
             "  " + " | ".join(h.rjust(w) for h, w in zip(header, widths)),
             "  " + "-+-".join("-" * w for w in widths),
             "  " + " | ".join(str(v).rjust(w) for v, w in zip(values, widths))]
    lines.append(f"  answered live (answer event): {outcome.answered_live}; from the stored answer (history): "
                 f"{outcome.answered - outcome.answered_live}; duplicated = charged twice {outcome.charged_twice}"
                 f" + two different answers {outcome.two_answers}")
    for name, value in outcome.figures.items():
        lines.append(f"  {name}: {value}")
    for name, passed in outcome.checks.items():
        lines.append(f"  check {'ok  ' if passed else 'FAIL'} {name}")
    for note in outcome.notes:
        lines.append(f"  note: {note}")
    for job in outcome.lost_jobs[:10]:
        lines.append(f"  lost: {job}")
    for job in outcome.duplicated_jobs[:10]:
        lines.append(f"  duplicated: {job}")
    return "\n".join(lines)
