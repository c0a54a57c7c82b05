"""Benchmark with Airflow in the loop: demo invoices prepared then sent by a real Airflow.

    .venv/bin/python bench/airflow_bench.py --invoices 2000 --workers 2

In the same run, on a throwaway PostgreSQL cluster seeded with demo data:
- the document-step throughput on one core (`pipeline_bench.DocumentBaseline`: final Factur-X
  render as a prepare chunk does, render + sign as a send chunk does, on 200 of the invoices the
  run processes, in this process's CPU time): 3 samples of ≈ 2 s of CPU per rate before Airflow
  starts and 3 once it has stopped (Redis too), the median kept; every sample is printed with
  the other processes' load meanwhile, their spread, and the orchestration share at the slowest
  and the fastest sample beside the median's, to show how much the share owes to the baseline
  (≈ 25 s of CPU per Airflow measure, three in `make bench`);
- a real Airflow 3 (the end-to-end tests' harness, `tests/e2e/live_airflow.py`: api-server,
  scheduler, dag-processor, triggerer as subprocesses, LocalExecutor with `parallelism` =
  `POSTIER_WORKERS` = `--workers`), the preparation then the send triggered through the REST API,
  the send's confirmation approved through the API, each timed from trigger to success (the
  seconds between the confirmation awaiting its answer and our answer are left out: that is the
  clerk's time, not the machine's; the run's state polled in the metadata database, not
  through the api-server being measured);
- each task's queue wait and duration read from the API, and from the task logs the time a task
  process took to be ready to work (`runtime.environment()`) and a chunk's own work
  (`process_chunk`);
- printed as ratios against the document step: orchestration share = 1 − (document time /
  workers) / wall time (document time: the prepared invoices at the median render rate plus the
  sent ones at the median render + sign rate; beside it, that document time against the task
  processes' CPU, a check that the baseline is no slower than the tasks' own work); beside it,
  the same share against the document step measured where it runs: each chunk's log line gives
  the CPU time of its renders and signatures (`time.thread_time` on the chunk work's thread,
  `postier.pipeline.runs.document_step`), summed over the chunks, and the baseline's document
  time over that measured CPU (above 1: the bench process renders slower than the tasks, and
  the baseline's share flatters Airflow); per mapped
  task overhead = the executor slots' time not spent working
  during the chunks (workers × (first chunk task queued → last ended − the serial steps a chunk
  task makes: the run's selection, a send's deliveries) − the chunks' own work), per chunk task
  (one per worker slot, each processing several chunks); the serial steps, logged by the task
  that makes them, count with the tasks around the chunks (`task_figures`);
- where the machine's CPU went during the two runs, per component (`cpu_account`): seconds and
  share of wall time × cores; the requests the api-server answered meanwhile, by kind (its
  access log); the latency from trigger to the first task and the gaps between tasks that
  follow each other.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e.live_airflow import (  # noqa: E402
    CELERY,
    Airflow,
    metadata_database,
    start_airflow,
    stop_airflow,
)
from e2e.live_redis import RedisServer, start_redis, stop_redis  # noqa: E402
from pipeline_bench import DocumentBaseline, bench_cluster, seed_demo_database  # noqa: E402
from process_cpu import CLOCK_TICKS, ProcessTable  # noqa: E402

from postier.pipeline.context import Environment  # noqa: E402
from postier.store.cluster import LocalCluster  # noqa: E402

PREPARE, SEND = "factures_preparer_envoi", "factures_envoyer"
CLERK = "jmartin"
CHUNK_TASK = "traiter_paquet"
APPROVE = "Envoyer"
POLL = 0.5
READY = re.compile(r"Tâche prête en ([0-9.]+) s, environnement résolu en ([0-9.]+) s")
#: A chunk's line (`postier.pipeline.runs.CHUNK_LOG`): invoices, seconds, document step's CPU.
CHUNK_WORK = re.compile(
    r"Paquet \d+ : (\d+) facture\(s\) traitée\(s\) en ([0-9.]+) s, "
    r"dont documents ([0-9.]+) s de CPU"
)
#: The same line's tail: the chunk thread's CPU, its waits in all, then for a core, for its
#: files' sync, for its commit and for the rest (its statements' answers, mostly).
CHUNK_WAITS = re.compile(
    r"CPU du paquet ([0-9.]+) s, attentes ([0-9.]+) s : d'un cœur ([0-9.]+) s, "
    r"mise en sûreté des fichiers ([0-9.]+) s, validation ([0-9.]+) s, "
    r"requêtes et autres ([0-9.]+) s"
)
#: The names of CHUNK_WAITS's figures, in its order.
CHUNK_WAIT_KINDS = ("cpu", "attentes", "cœur", "mise en sûreté", "validation", "requêtes")
PEAK_MEMORY = re.compile(r"Mémoire max de la tâche : (\d+) Mio")
#: The send's deliveries, done by the chunk task that ends its work
#: (`postier.pipeline.mailing.DELIVERY_LOG`).
DELIVERY = re.compile(r"Livraison de l'envoi \(courriels, plateforme agréée\) en ([0-9.]+) s")
#: The run's selection, done by the first chunk task or the send's confirmation
#: (`dag_factory.SELECTION_LOG`).
SELECTION = re.compile(
    r"Sélection de l'exécution \(critères, configuration, factures\) en ([0-9.]+) s"
)
#: A task process ready to work, with its log line's time (the task logs are JSON lines).
READY_AT = re.compile(r'"timestamp":"([^"]+)"[^\n]*"event":"Tâche prête en ')
#: The run's selection line and each chunk's line, with their time (the end of the step they
#: time; its seconds before: its start).
SELECTION_AT = re.compile(
    r'"timestamp":"([^"]+)"[^\n]*"event":"Sélection de l\'exécution \(critères, '
    r"configuration, factures\) en ([0-9.]+) s"
)
CHUNK_AT = re.compile(
    r'"timestamp":"([^"]+)"[^\n]*"event":"Paquet \d+ : \d+ facture\(s\) traitée\(s\) '
    r"en ([0-9.]+) s"
)
#: A request in the api-server's access log (one line per request answered).
ACCESS = re.compile(rb"request finished.* method=([A-Z]+) path=(\S+)")
REQUEST_KINDS = (
    (
        "battements de cœur des superviseurs",
        re.compile(r"^/execution/task-instances/[^/]+/heartbeat$"),
    ),
    ("début, état, champs rendus des tâches", re.compile(r"^/execution/task-instances/")),
    ("XCom", re.compile(r"^/execution/xcoms/")),
    ("connexions, variables", re.compile(r"^/execution/(connections|variables)/")),
    ("autres de l'API d'exécution", re.compile(r"^/execution/")),
    ("API publique (ce banc, l'interface)", re.compile(r"^/")),
)
#: A Celery worker's log lines of one task message: received, run (the task's log), done.
CELERY_LINES = {
    "received": re.compile(r"^(\S+) .*Task execute_workload\[([0-9a-f-]+)\] received"),
    "log": re.compile(r"^\S+ .*\[([0-9a-f-]+)\] Executing workload in Celery: .*log_path='(.+?)'"),
    "done": re.compile(r"^(\S+) .*Task execute_workload\[([0-9a-f-]+)\] succeeded"),
}


class SharedHomeAirflow(Airflow):
    """Celery workers sharing one POSTIER_HOME: the run files a chunk writes are where the
    finaliser reads them (as a shared folder would make them, until run files go through a
    storage URL)."""

    def worker_home(self, worker: str) -> Path:
        return self.postier_home


CORES = os.cpu_count() or 1
SUPERVISORS, TASKS, BENCH = "superviseurs de tâches", "processus de tâches", "ce banc (API)"


#: The whole machine's CPU seconds (/proc/stat): busy (user, nice, system, irq, softirq, steal),
#: and idle while a disk request was outstanding (iowait): kept apart from the components.
MACHINE_BUSY, MACHINE_IOWAIT = "machine:busy", "machine:iowait"


def machine_cpu() -> dict[str, float]:
    """The machine's busy and iowait CPU seconds so far, over all its cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(f) / CLOCK_TICKS for f in stat.readline().split()[1:9]]
    user, nice, system, _idle, iowait, irq, softirq, steal = fields
    return {MACHINE_BUSY: user + nice + system + irq + softirq + steal, MACHINE_IOWAIT: iowait}


#: A `cpu_account` (or `machine_cpu`) sample: (epoch seconds, CPU seconds by name).
CpuSample = tuple[float, dict[str, float]]


class MachineSampler:
    """The machine's busy CPU seconds (`machine_cpu`) sampled every `interval` seconds on a
    thread of this bench, from `start` to `stop`: fine enough to split a run's idle cores by
    phase (the polls' `cpu_account` samples come every `POLL`, longer than a selection). One
    read of /proc/stat each (≈ 0.05 ms)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[CpuSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="machine-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), machine_cpu()))
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def idle_core_s(samples: list[CpuSample], start: float, end: float) -> float:
    """Core·seconds the machine left idle from `start` to `end` (epoch seconds): its cores × the
    span less its busy CPU over it (`MACHINE_BUSY` interpolated between `samples`)."""
    if end <= start:
        return 0.0
    busy = cpu_at(samples, end)[MACHINE_BUSY] - cpu_at(samples, start)[MACHINE_BUSY]
    return CORES * (end - start) - busy


def cpu_account(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds (utime + stime) used so far by the process tree of each of `roots` (name →
    pid): its live processes' own plus what their reaped children used (a process's CPU goes to
    its parent when it is reaped). Under an executor (the scheduler's LocalExecutor, a Celery
    worker) the direct children are the task supervisors, their children the task processes."""
    table = ProcessTable.read()
    account: dict[str, float] = defaultdict(float)
    for name, pid in roots.items():
        if pid not in table.own:
            continue
        if name == "scheduler" or name.startswith("worker-"):
            account[name] += table.own[pid] + table.reaped[pid]
            for supervisor in table.children[pid]:
                account[SUPERVISORS] += table.own[supervisor]
                account[TASKS] += table.reaped[supervisor]
                account[TASKS] += sum(table.tree(task) for task in table.children[supervisor])
        else:
            account[name] += table.tree(pid)
    account[BENCH] = table.own[os.getpid()]
    return account | machine_cpu()


def account_roots(af: Airflow, cluster: LocalCluster) -> dict[str, int]:
    """The processes `cpu_account` follows: Airflow's components and PostgreSQL's postmaster
    (its backends, Airflow's metadata and Postier's, are its children)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    return {name: proc.pid for name, proc in af.processes.items()} | {"PostgreSQL": postmaster}


@dataclass
class RunTiming:
    """One Airflow run as measured: wall time, its tasks, what the task logs say."""

    dag_id: str
    run_id: str
    #: Trigger (POST, this bench's clock) → end recorded by Airflow, minus `clerk_s`.
    wall_s: float
    #: The confirmation's task in awaiting_input → answered, as Airflow recorded them.
    clerk_s: float = 0.0
    #: The same two as this bench's polls saw them (run success, `awaiting_input`).
    polled_wall_s: float = 0.0
    polled_clerk_s: float = 0.0
    #: The trigger's POST: its duration, and Airflow's queued_at after its start (clock check).
    post_s: float = 0.0
    queued_after_post_s: float = 0.0
    #: The confirmation's HITL detail written → its task in awaiting_input (machine time).
    asked_to_parked_s: float = 0.0
    #: Total CPU over the polled span (`cpu_s` is over the recorded one).
    polled_cpu_s: float = 0.0
    #: When the API queued the run (the trigger), Airflow's clock.
    queued_at: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    env_s: list[float] = field(default_factory=list)
    chunk_work_s: dict[int, float] = field(default_factory=dict)
    #: CPU of the document step (render + sign) in the chunks, from their log lines.
    chunk_document_cpu_s: float = 0.0
    #: Sums over the chunks of their thread's CPU and waits (CHUNK_WAITS), by CHUNK_WAIT_KINDS.
    chunk_waits_s: dict[str, float] = field(default_factory=dict)
    chunk_lines: int = 0
    #: The send's deliveries (e-mails, PA deposits) in the chunk task that ended its work.
    delivery_s: float = 0.0
    #: The run's selection, in the chunk task that made it (`in_chunks`) or the confirmation.
    selection_s: float = 0.0
    selection_in_chunks_s: float = 0.0
    #: When the clerk's answer was recorded (the HITL detail's responded_at, ISO), a send only.
    answered_at: str | None = None
    #: When each chunk task's process was ready to work (its log line, ISO).
    chunk_ready_at: list[str] = field(default_factory=list)
    #: Ready time of each task process with the task's log file (task_id=…/map_index=…).
    ready_by_task: list[tuple[float, str]] = field(default_factory=list)
    #: CPU seconds per component from trigger to success (`cpu_account`).
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Largest peak memory (VmHWM, MiB) of a task process, per task id, from the task logs.
    peak_mib: dict[str, int] = field(default_factory=dict)
    #: The whole machine's busy and iowait CPU seconds over the span of `cpu_s` (`machine_cpu`).
    machine_s: dict[str, float] = field(default_factory=dict)
    #: Requests the api-server answered over the same span as `cpu_s`, by kind.
    requests: Counter[str] = field(default_factory=Counter)
    #: The `cpu_account` samples taken at each poll (epoch seconds, account): the CPU over a
    #: part of the run (`cpu_at`), e.g. a send's deliveries.
    cpu_samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    #: The trigger's POST and the run's end as Airflow recorded it, epoch seconds; for a send,
    #: the clerk's question (its task parked) and answer: the edges of the run's phases.
    posted: float = 0.0
    ended: float = 0.0
    asked: float | None = None
    answered: float | None = None
    #: The run's selection (start, end), epoch seconds, from its log line.
    selection_span: tuple[float, float] | None = None
    #: Each chunk's (start, end), epoch seconds, by the task log it is in (a chunk task's attempt).
    chunk_spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _seconds(start: str | None, end: str | None) -> float:
    a, b = _when(start), _when(end)
    return (b - a).total_seconds() if a and b else 0.0


def _states(db: psycopg.Connection[Any], dag_id: str, run_id: str) -> tuple[str, str | None]:
    """(state of the run, of its confirmation) from Airflow's metadata database. Asked through
    the REST API, each poll cost the api-server ≈ 12 ms of CPU and PostgreSQL 2 ms (measured on
    an Airflow at rest): twice a second, load this bench put on the machine it measures and
    counted as the api-server's."""
    row = db.execute(
        "SELECT r.state, ti.state FROM dag_run r LEFT JOIN task_instance ti ON ti.dag_id = "
        "r.dag_id AND ti.run_id = r.run_id AND ti.task_id = 'confirmation' AND ti.map_index = -1 "
        "WHERE r.dag_id = %s AND r.run_id = %s",
        (dag_id, run_id),
    ).fetchone()
    assert row is not None, f"no run {dag_id}/{run_id}"
    return str(row[0]), row[1]


def _run_state(
    af: Airflow, api: httpx.Client, db: psycopg.Connection[Any], dag_id: str, run_id: str
) -> str | None:
    state = _states(db, dag_id, run_id)[0]
    if state == "failed":
        tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in tis["task_instances"]}
        raise RuntimeError(
            f"run {dag_id}/{run_id} failed: {states}\n{af.task_logs(dag_id, run_id, 1500)}"
        )
    return state if state == "success" else None


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def api_requests(access_log: Path, spans: list[tuple[int, int]]) -> Counter[str]:
    """Requests the api-server answered within `spans` (byte offsets of its access log), by
    kind (`REQUEST_KINDS`)."""
    kinds: Counter[str] = Counter()
    with access_log.open("rb") as log:
        for start, end in spans:
            log.seek(start)
            for _method, path in ACCESS.findall(log.read(end - start)):
                route = path.decode(errors="replace")
                kinds[next(kind for kind, match in REQUEST_KINDS if match.match(route))] += 1
    return kinds


def cpu_at(samples: list[CpuSample], when: float) -> dict[str, float]:
    """CPU seconds per component at the instant `when` (epoch seconds), interpolated linearly
    between the two `cpu_account` samples (epoch seconds, account) around it; before the first
    or after the last sample, that sample's account."""
    ordered = sorted(samples, key=lambda sample: sample[0])
    before = [sample for sample in ordered if sample[0] <= when]
    after = [sample for sample in ordered if sample[0] >= when]
    if not before or not after:
        return dict((before or after)[-1 if before else 0][1])
    (t0, a), (t1, b) = before[-1], after[0]
    weight = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
    return {
        name: a.get(name, 0.0) + weight * (b.get(name, 0.0) - a.get(name, 0.0))
        for name in a.keys() | b.keys()
    }


def _airflow_times(
    db: psycopg.Connection[Any], dag_id: str, run_id: str
) -> tuple[datetime, datetime | None, datetime | None]:
    """What Airflow recorded of a run (its metadata database): its end, and the moments its
    confirmation asked (the HITL detail written, just before the task parks in
    awaiting_input) and was answered (None without a confirmation)."""
    row = db.execute(
        "SELECT r.end_date, h.created_at, h.responded_at FROM dag_run r "
        "LEFT JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id "
        "AND ti.task_id = 'confirmation' AND ti.map_index = -1 "
        "LEFT JOIN hitl_detail h ON h.ti_id = ti.id WHERE r.dag_id = %s AND r.run_id = %s",
        (dag_id, run_id),
    ).fetchone()
    assert row is not None and row[0] is not None, f"no end recorded for {dag_id}/{run_id}"
    return row[0], row[1], row[2]


def run_dag(
    af: Airflow,
    api: httpx.Client,
    db: psycopg.Connection[Any],
    dag_id: str,
    timeout: float,
    roots: dict[str, int],
) -> RunTiming:
    """Trigger `dag_id` with its default criteria, approve its confirmation if it has one, wait
    for success (its state polled in the metadata database `db`). Wall time from the trigger
    (this bench's clock at the POST) to the run's end as Airflow recorded it (`dag_run.end_date`,
    same host clock), minus the clerk's time as Airflow recorded it (the confirmation's task
    instance entering awaiting_input → the HITL detail's answer), not the moments a poll saw
    them (up to `POLL` late each); the CPU the processes of `roots` used over the same span,
    interpolated at those instants between the `cpu_account` samples taken at each poll.
    The polled figures are kept beside."""
    af.wait_for_dag(api, dag_id)
    api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
    access_log = af.log_file("api-server")
    spans = [(_log_size(access_log), 0)]
    samples: list[CpuSample] = []

    def sample() -> dict[str, float]:
        samples.append((time.time(), cpu_account(roots)))
        return samples[-1][1]

    def sampled(probe: Callable[[], bool | str | None]) -> Callable[[], bool | str | None]:
        def probe_then_sample() -> bool | str | None:
            result = probe()
            sample()  # after the state's read: a state seen is no later than this sample
            return result

        return probe_then_sample

    cpu_before = sample()
    started = time.monotonic()
    posted = samples[-1][0]
    response = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}})
    post_s = time.time() - posted
    response.raise_for_status()
    run_id = str(response.json()["dag_run_id"])
    clerk_s = 0.0
    cpu_polled = dict(cpu_before)
    if dag_id == SEND:

        def awaiting() -> bool | None:
            if _run_state(af, api, db, dag_id, run_id):
                raise RuntimeError("the send finished without asking for its confirmation")
            return True if _states(db, dag_id, run_id)[1] == "awaiting_input" else None

        af.wait_for("the send's confirmation", sampled(awaiting), timeout)
        asked, cpu_asked = time.monotonic(), samples[-1][1]
        # When the task instance was last updated, seen now: its entry into awaiting_input,
        # where the clerk's time starts.
        parked = db.execute(
            "SELECT updated_at FROM task_instance WHERE dag_id = %s AND run_id = %s "
            "AND task_id = 'confirmation' AND map_index = -1",
            (dag_id, run_id),
        ).fetchone()
        spans[0] = (spans[0][0], _log_size(access_log))
        af.wait_for_parked_worker_exit(dag_id, run_id, "confirmation")
        hitl = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/confirmation/-1/hitlDetails"
        sample()
        api.patch(hitl, json={"chosen_options": [APPROVE]}).raise_for_status()
        clerk_s = time.monotonic() - asked
        cpu_answered = sample()
        spans.append((_log_size(access_log), 0))
        # The polled account: the CPU from the poll that saw the question to the answer out.
        cpu_polled = {
            name: cpu_before.get(name, 0.0) + cpu_answered[name] - cpu_asked.get(name, 0.0)
            for name in cpu_answered
        }
    af.wait_for(
        f"{dag_id}/{run_id} to succeed",
        sampled(lambda: _run_state(af, api, db, dag_id, run_id)),
        timeout,
    )
    polled_wall_s = time.monotonic() - started - clerk_s
    cpu_after = samples[-1][1]
    spans[-1] = (spans[-1][0], _log_size(access_log))
    ended, asked_at, answered_at = _airflow_times(db, dag_id, run_id)
    end = ended.timestamp()
    cpu_end = cpu_at(samples, end)
    cpu_start = dict(cpu_before)
    recorded_clerk_s, timing_parked_s = 0.0, 0.0
    if dag_id == SEND:
        assert asked_at and answered_at, f"no question or answer recorded for {dag_id}/{run_id}"
        if parked and parked[0] and parked[0] >= asked_at:
            # The clerk's time starts when the task entered awaiting_input: its last update
            # seen by the poll that saw the state (no earlier than the entry, no later than that
            # poll); not the HITL detail's creation, before the task's parking.
            timing_parked_s = (parked[0] - asked_at).total_seconds()
            asked_at = parked[0]
        recorded_clerk_s = (answered_at - asked_at).total_seconds()
        # The CPU used while the clerk's answer was awaited counts no more than its seconds do.
        cpu_asked_at = cpu_at(samples, asked_at.timestamp())
        cpu_answered_at = cpu_at(samples, answered_at.timestamp())
        cpu_start = {
            name: cpu_before.get(name, 0.0) + cpu_answered_at[name] - cpu_asked_at.get(name, 0.0)
            for name in cpu_answered_at
        }
    timing = RunTiming(dag_id, run_id, end - posted - recorded_clerk_s, recorded_clerk_s)
    timing.answered_at = answered_at.isoformat() if answered_at else None
    timing.posted, timing.ended = posted, end
    if dag_id == SEND and asked_at and answered_at:
        timing.asked, timing.answered = asked_at.timestamp(), answered_at.timestamp()
    timing.polled_wall_s, timing.polled_clerk_s, timing.post_s = polled_wall_s, clerk_s, post_s
    timing.asked_to_parked_s = timing_parked_s
    timing.cpu_s = {name: cpu_end[name] - cpu_start.get(name, 0.0) for name in cpu_end}
    timing.machine_s = {k: timing.cpu_s.pop(k, 0.0) for k in (MACHINE_BUSY, MACHINE_IOWAIT)}
    timing.polled_cpu_s = sum(
        cpu_after[name] - cpu_polled.get(name, 0.0) for name in timing.cpu_s if name in cpu_after
    )
    timing.requests = api_requests(access_log, spans)
    timing.cpu_samples = samples
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
    response.raise_for_status()
    timing.tasks = response.json()["task_instances"]
    timing.queued_at = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json().get("queued_at")
    queued = _when(timing.queued_at)
    # Same host clock: the run is queued while its POST is answered.
    timing.queued_after_post_s = queued.timestamp() - posted if queued else float("nan")
    folder = af.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    for log_file in sorted(folder.rglob("*.log")):
        text = log_file.read_text(errors="replace")
        for ready, env in READY.findall(text):
            timing.ready_s.append(float(ready))
            timing.env_s.append(float(env))
            timing.ready_by_task.append((float(ready), str(log_file.relative_to(folder))))
        mapped = re.search(r"map_index=(\d+)", str(log_file))
        kind = re.search(r"task_id=([^/]+)", str(log_file))
        if kind and kind.group(1) == CHUNK_TASK:
            timing.chunk_ready_at += READY_AT.findall(text)
        timing.delivery_s += sum(float(seconds) for seconds in DELIVERY.findall(text))
        for at, seconds in SELECTION_AT.findall(text):
            selected = _when(at)
            assert selected is not None
            timing.selection_span = (selected.timestamp() - float(seconds), selected.timestamp())
        for at, seconds in CHUNK_AT.findall(text):
            chunk_end = _when(at)
            assert chunk_end is not None
            timing.chunk_spans.setdefault(str(log_file.relative_to(folder)), []).append(
                (chunk_end.timestamp() - float(seconds), chunk_end.timestamp())
            )
        selection = sum(float(seconds) for seconds in SELECTION.findall(text))
        timing.selection_s += selection
        if kind and kind.group(1) == CHUNK_TASK:
            timing.selection_in_chunks_s += selection
        for peak in PEAK_MEMORY.findall(text):
            if kind:
                task_id = kind.group(1)
                timing.peak_mib[task_id] = max(timing.peak_mib.get(task_id, 0), int(peak))
        for _count, work, documents in CHUNK_WORK.findall(text):
            timing.chunk_document_cpu_s += float(documents)
            timing.chunk_lines += 1
            if mapped:
                # A chunk task processes several chunks: one line each.
                index = int(mapped.group(1))
                timing.chunk_work_s[index] = timing.chunk_work_s.get(index, 0.0) + float(work)
        for figures in CHUNK_WAITS.findall(text):
            for kind, value in zip(CHUNK_WAIT_KINDS, figures, strict=True):
                timing.chunk_waits_s[kind] = timing.chunk_waits_s.get(kind, 0.0) + float(value)
    return timing


def print_chunk_waits(run: RunTiming) -> None:
    """Where the chunks' slot time went besides their thread's CPU, summed over the run's
    chunks (their log lines): waiting for a core, for their files' sync, for their commit, for
    the rest (their statements' answers, mostly)."""
    waits = run.chunk_waits_s
    if not waits:
        return
    work = sum(run.chunk_work_s.values())
    lines = max(1, run.chunk_lines)
    print(
        f"paquets de {run.dag_id} : {run.chunk_lines} paquet(s), {work:.1f} s de slot, dont CPU "
        f"du fil {waits['cpu']:.1f} s et attentes {waits['attentes']:.1f} s "
        f"({waits['attentes'] / lines * 1000:.0f} ms par paquet) : d'un cœur "
        f"{waits['cœur']:.1f} s, mise en sûreté des fichiers {waits['mise en sûreté']:.1f} s, "
        f"validation {waits['validation']:.1f} s, requêtes et autres {waits['requêtes']:.1f} s",
        flush=True,
    )


def print_clocks(run: RunTiming) -> None:
    """A run's wall time as the polls saw it beside the one Airflow's recorded times give, the
    clerk's time likewise, the two clocks' agreement (the run's queued_at against the POST) and
    the total CPU over the polled span against the recorded one."""
    print(
        f"horloges de {run.dag_id} : durée sondée {run.polled_wall_s:.2f} s, d'après les dates "
        f"d'Airflow {run.wall_s:.2f} s (écart {run.wall_s - run.polled_wall_s:+.2f} s) ; "
        f"réponse du commis sondée {run.polled_clerk_s:.2f} s, enregistrée {run.clerk_s:.2f} s "
        f"(question écrite → tâche en attente {run.asked_to_parked_s * 1000:.0f} ms) ; "
        f"queued_at − début du POST {run.queued_after_post_s * 1000:+.0f} ms (POST en "
        f"{run.post_s * 1000:.0f} ms) ; CPU de l'intervalle sondé {run.polled_cpu_s:.1f} s, "
        f"de l'intervalle enregistré {sum(run.cpu_s.values()):.1f} s",
        flush=True,
    )


def answer_path(run: RunTiming) -> dict[str, float]:
    """The send's steps from the clerk's answer to the first chunk task ready to work, in wall
    time, as Airflow and the task logs recorded them (empty without an answer): the scheduler
    queueing the resumed confirmation (`answer_to_queued_s`), that task process running its
    `execute_complete` until the confirmation's end (`resumed_s`), the scheduler queueing the
    chunk tasks (`end_to_chunks_queued_s`), the first of them started (`queued_to_started_s`)
    and ready (`started_to_ready_s`); their sum `answer_to_ready_s`, and the last chunk task's
    start after the first's (`chunk_starts_spread_s`: a slot still held by the confirmation's
    supervisor delays the second)."""
    confirmation = next((t for t in run.tasks if t["task_id"] == "confirmation"), None)
    chunks = [t for t in run.tasks if t["task_id"] == CHUNK_TASK and t.get("start_date")]
    answered = _when(run.answered_at)
    if not (answered and confirmation and chunks and run.chunk_ready_at):
        return {}
    resumed_queued = _when(confirmation["queued_when"])
    ended = _when(confirmation["end_date"])
    chunks_queued = min(_when(t["queued_when"]) or _when(t["start_date"]) for t in chunks)
    starts = sorted(_when(t["start_date"]) for t in chunks)
    ready = min(_when(at) for at in run.chunk_ready_at)
    assert resumed_queued and ended and chunks_queued and ready
    steps = {
        "answer_to_queued_s": (resumed_queued - answered).total_seconds(),
        "resumed_s": (ended - resumed_queued).total_seconds(),
        "end_to_chunks_queued_s": (chunks_queued - ended).total_seconds(),
        "queued_to_started_s": (starts[0] - chunks_queued).total_seconds(),
        "started_to_ready_s": (ready - starts[0]).total_seconds(),
    }
    steps["answer_to_ready_s"] = (ready - answered).total_seconds()
    steps["chunk_starts_spread_s"] = (starts[-1] - starts[0]).total_seconds()
    return steps


def print_answer_path(run: RunTiming) -> None:
    """`answer_path` of a send, in one line."""
    steps = answer_path(run)
    if steps:
        print(
            f"réponse du commis → première tâche de paquet prête ({run.dag_id}) : "
            f"{steps['answer_to_ready_s']:.2f} s = confirmation reprise mise en file "
            f"{steps['answer_to_queued_s']:.2f} s (scheduler) + reprise jusqu'à sa fin "
            f"{steps['resumed_s']:.2f} s (processus de tâche, execute_complete) + tâches de "
            f"paquets en file {steps['end_to_chunks_queued_s']:.2f} s (scheduler) + première "
            f"démarrée {steps['queued_to_started_s']:.2f} s + prête "
            f"{steps['started_to_ready_s']:.2f} s ; dernière tâche de paquet démarrée "
            f"{steps['chunk_starts_spread_s']:.2f} s après la première",
            flush=True,
        )


#: A run's phases from its trigger to its end, in order (`edge_phases`), with their labels.
PHASES = (
    ("trigger", "déclenchement → début de la sélection (scheduler, démarrage de la tâche)"),
    ("selection", "sélection (la tâche qui sélectionne seule au travail)"),
    ("question", "fin de la sélection → question au commis (confirmation de l'envoi)"),
    ("to_chunks", "fin de la sélection, ou réponse du commis → début du premier paquet"),
    ("chunks", "paquets, jusqu'à la fin du dernier paquet de la première tâche finie"),
    ("tail", "fin inégale des paquets : première tâche finie → dernier paquet fini"),
    ("end", "dernier paquet fini → fin de l'exécution enregistrée"),
)


def edge_phases(run: RunTiming) -> dict[str, tuple[float, float]]:
    """The phases of `run` (`PHASES`: start, end in epoch seconds), from the trigger's POST, its
    selection's and chunks' log lines, the clerk's question and answer for a send, and the end
    Airflow recorded: back to back, the clerk's time between `question` and `to_chunks` left
    out. A phase the run does not have (`question` but in a send) is absent; an edge a log line
    does not give (a run with no chunk, no selection line) makes its phases empty."""
    chunk_starts = [start for spans in run.chunk_spans.values() for start, _end in spans]
    first_chunk = min(chunk_starts, default=run.ended)
    # Each chunk task's last chunk end; a task that got no chunk is no end of the chunks.
    task_ends = [max(end for _start, end in spans) for spans in run.chunk_spans.values()]
    last_chunk = max(task_ends, default=first_chunk)
    first_done = min(task_ends, default=last_chunk)
    selection = run.selection_span or (first_chunk, first_chunk)
    phases: dict[str, tuple[float, float]] = {}
    cursor = run.posted

    def phase(name: str, end: float) -> None:
        # Edges from two clocks' records (Airflow's, the task logs'), kept in order.
        nonlocal cursor
        end = min(max(end, cursor), run.ended)
        phases[name], cursor = (cursor, end), end

    phase("trigger", selection[0])
    phase("selection", selection[1])
    if run.asked is not None and run.answered is not None:
        phase("question", run.asked)
        cursor = min(max(run.answered, cursor), run.ended)  # the clerk's time left out
    phase("to_chunks", first_chunk)
    phase("chunks", first_done)
    phase("tail", last_chunk)
    phase("end", run.ended)
    return phases


def idle_by_phase(run: RunTiming, samples: list[CpuSample]) -> dict[str, tuple[float, float]]:
    """Each phase of `run` (`edge_phases`): its seconds and the core·seconds the machine left
    idle meanwhile (`idle_core_s` over the `MachineSampler`'s samples)."""
    return {
        name: (end - start, idle_core_s(samples, start, end))
        for name, (start, end) in edge_phases(run).items()
    }


def print_idle_phases(figures: dict[str, Any], what: str = "") -> None:
    """Where the idle cores of the prepare + send were (`idle_by_phase`): per phase of each run,
    its seconds and idle core·seconds, and its part of their total."""
    runs: dict[str, dict[str, tuple[float, float]]] = figures["idle_phases"]
    total = sum(idle for phases in runs.values() for _s, idle in phases.values())
    names = {PREPARE: "préparation", SEND: "envoi"}
    print(
        f"\nCœurs inactifs par phase{what} ({CORES} cœurs, /proc/stat lu toutes les 20 ms ; "
        "la réponse du commis exclue)"
    )
    heads = " | ".join(f"{names.get(d, d)} : s | {names.get(d, d)} : cœur·s" for d in runs)
    print(f"| phase | {heads} | cœur·s, les 2 | part |\n|---|{'---:|' * (2 * len(runs) + 2)}")
    for name, label in PHASES:
        cells = [runs[d].get(name) for d in runs]
        if all(cell is None for cell in cells):
            continue
        idle = sum(cell[1] for cell in cells if cell)
        shown = " | ".join(f"{c[0]:.2f} | {c[1]:.2f}" if c else "— | —" for c in cells)
        print(f"| {label} | {shown} | {idle:.2f} | {idle / total if total else 0:.0%} |")
    sums = " | ".join(
        f"{sum(s for s, _i in p.values()):.2f} | {sum(i for _s, i in p.values()):.2f}"
        for p in runs.values()
    )
    print(f"| **total** | {sums} | {total:.2f} | 100% |", flush=True)


def latencies(run: RunTiming) -> tuple[float, list[float]]:
    """(trigger → first task started, gaps between a task's end and the start of the next one)
    of `run`, the mapped chunks taken as one step (first start → last end)."""
    steps: dict[str, tuple[datetime, datetime]] = {}
    for ti in run.tasks:
        start, end = _when(ti.get("start_date")), _when(ti.get("end_date"))
        if ti["state"] == "success" and start and end:
            first, last = steps.get(ti["task_id"], (start, end))
            steps[ti["task_id"]] = (min(first, start), max(last, end))
    ordered = sorted(steps.values())
    queued = _when(run.queued_at)
    first_s = (ordered[0][0] - queued).total_seconds() if ordered and queued else 0.0
    gaps = [max(0.0, (b[0] - a[1]).total_seconds()) for a, b in pairwise(ordered)]
    return first_s, gaps


def task_figures(runs: list[RunTiming], slots: int) -> dict[str, float]:
    """Overheads of the tasks of `runs` (the confirmation left out: it waits for the clerk).

    A mapped task's overhead is what the `slots` executor slots spend not working during the
    chunks' phase (first chunk task queued → last ended), per chunk task: task process start-up,
    scheduling, slot release, and between its chunks their claims and connections. A serial
    task's cost is its queue wait plus its duration, all of it outside document work. A send's
    deliveries (e-mails, PA deposits), a serial step done by the chunk task that ends the run
    (its own task before), count as serial: their time (one slot working, the other waiting)
    is taken out of the chunks' phase and added to the serial cost; so does the run's selection
    (its own task before) when the first chunk task makes it (the others wait for it), and
    the send's, made by the confirmation before it asks, is added to the serial cost."""
    mapped_idle, mapped_count, idle_slots = 0.0, 0, 0.0
    serial_waits, serial_cost = [], 0.0
    for run in runs:
        chunks = [t for t in run.tasks if t["task_id"] == CHUNK_TASK and t["state"] == "success"]
        if chunks:
            first = min(_when(t["queued_when"]) or _when(t["start_date"]) for t in chunks)
            last = max(_when(t["end_date"]) for t in chunks)
            work = sum(run.chunk_work_s.values())
            serial_in_chunks = run.delivery_s + run.selection_in_chunks_s
            mapped_idle += slots * ((last - first).total_seconds() - serial_in_chunks) - work
            mapped_count += len(chunks)
            # Slots idle while the chunks run (first chunk started → last ended, the API's
            # times): the tail when chunks end unevenly, and the gaps between two chunks.
            began = min(_when(t["start_date"]) for t in chunks)
            busy = sum(_seconds(t["start_date"], t["end_date"]) for t in chunks)
            idle_slots += slots * (last - began).total_seconds() - busy
        for ti in run.tasks:
            if ti["task_id"] in (CHUNK_TASK, "confirmation") or ti["state"] != "success":
                continue
            wait = _seconds(ti.get("queued_when"), ti.get("start_date"))
            serial_waits.append(wait)
            serial_cost += wait + _seconds(ti.get("start_date"), ti.get("end_date"))
        serial_cost += run.delivery_s + run.selection_s
    ready = [r for run in runs for r in run.ready_s]
    env = [e for run in runs for e in run.env_s]
    firsts = [latencies(run)[0] for run in runs]
    all_gaps = [gap for run in runs for gap in latencies(run)[1]]
    slowest = max((r for run in runs for r in run.ready_by_task), default=(0.0, "—"))
    print(f"(processus de tâche le plus lent à être prêt : {slowest[1]}, {slowest[0]:.2f} s)")
    return {
        "first_task_s": statistics.mean(firsts) if firsts else 0.0,
        "gap_mean_s": statistics.mean(all_gaps) if all_gaps else 0.0,
        "gap_max_s": max(all_gaps, default=0.0),
        "gaps_s": sum(all_gaps),
        "mapped_tasks": mapped_count,
        "mapped_overhead_s": mapped_idle / mapped_count if mapped_count else 0.0,
        "mapped_idle_s": mapped_idle,
        "idle_slot_s": idle_slots,
        "queue_wait_s": statistics.mean(serial_waits) if serial_waits else 0.0,
        "serial_tasks": len(serial_waits),
        "serial_s": serial_cost,
        "delivery_s": sum(run.delivery_s for run in runs),
        "selection_s": sum(run.selection_s for run in runs),
        "ready_median_s": statistics.median(ready) if ready else 0.0,
        "ready_max_s": max(ready, default=0.0),
        "env_median_s": statistics.median(env) if env else 0.0,
    }


def celery_path(af: Airflow, runs: list[RunTiming]) -> dict[str, float]:
    """Where a task's time goes on Celery outside its own process, median over the tasks of
    `runs` (the confirmation left out), from the API's times and the workers' logs: queued by
    the scheduler → its message received by a worker (publish, Redis); received → started
    (the API's start date: the worker's pool process ran its supervisor, which told the
    api-server); ended (the API's end date) → the worker done with it (its supervisor saw the
    task process exit, the result stored for the scheduler to read)."""
    messages: dict[str, dict[str, str]] = defaultdict(dict)
    for worker in af.workers:
        for line in af.log_file(worker).read_text(errors="replace").splitlines():
            for what, pattern in CELERY_LINES.items():
                if found := pattern.match(line):
                    if what == "log":
                        messages[found.group(1)]["log"] = found.group(2)
                    else:
                        messages[found.group(2)][what] = found.group(1)
    by_log = {m["log"]: m for m in messages.values() if "log" in m}
    parts: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for ti in run.tasks:
            if ti["task_id"] == "confirmation" or ti["state"] != "success":
                continue
            mapped = f"map_index={ti['map_index']}/" if ti["map_index"] >= 0 else ""
            log = (
                f"dag_id={run.dag_id}/run_id={run.run_id}/task_id={ti['task_id']}/{mapped}"
                f"attempt={ti['try_number']}.log"
            )
            if (message := by_log.get(log)) is None:
                continue
            parts["queued_to_worker_s"].append(_seconds(ti["queued_when"], message["received"]))
            parts["worker_to_start_s"].append(_seconds(message["received"], ti["start_date"]))
            parts["end_to_worker_done_s"].append(_seconds(ti["end_date"], message.get("done")))
    return {name: statistics.median(values) for name, values in parts.items()}


def counts(dsn: str, external_id: str) -> tuple[int, int]:
    """(invoices done, chunks) of the Postier run of an Airflow run."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE ri.status = 'traitee'), count(DISTINCT ri.chunk) "
            "FROM runs r JOIN run_items ri ON ri.run_id = r.id WHERE r.external_id = %s",
            (external_id,),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def measure(invoices: int, workers: int, timeout: float, celery: bool = False) -> dict[str, Any]:
    """Prepare then send `invoices` demo invoices on `workers` task slots: the LocalExecutor,
    or `workers` Celery workers of one slot each."""
    base = Path(tempfile.mkdtemp(prefix="postier-airflow-bench-"))
    base.chmod(0o755)
    cluster = bench_cluster(base)
    af: Airflow | None = None
    redis: RedisServer | None = None
    try:
        dsn = seed_demo_database(cluster, invoices)
        home = base / "postier-home"
        # The one-core rates, before Airflow starts and again once it has stopped.
        baseline = DocumentBaseline.load(Environment(dsn=dsn, home=home))
        baseline.measure("avant")
        metadata = metadata_database(cluster, "airflow_bench")
        # The harness runs Airflow with the production settings (`PRODUCTION_SETTINGS`; on
        # Celery `CELERY_SETTINGS` too, whose parallelism is above the slots).
        settings = {"POSTIER_WORKERS": str(workers)}
        if celery:
            redis = start_redis(base / "redis")
            af = SharedHomeAirflow(
                home=base / "airflow",
                postier_dsn=dsn,
                postier_home=home,
                executor=CELERY,
                broker_url=redis.url,
                celery_workers=workers,
                worker_concurrency=1,
                settings=settings,
            )
        else:
            af = Airflow(home=base / "airflow", postier_dsn=dsn, postier_home=home)
            # The LocalExecutor runs `parallelism` task processes: the slots.
            af.settings = settings | {"AIRFLOW__CORE__PARALLELISM": str(workers)}
        af.home.mkdir()
        start_airflow(af, metadata)
        roots = account_roots(af, cluster)
        metadata_dsn = metadata.replace("postgresql+psycopg://", "postgresql://", 1)
        sampler = MachineSampler()
        sampler.start()
        try:
            with af.client(CLERK) as api, psycopg.connect(metadata_dsn, autocommit=True) as db:
                prep = run_dag(af, api, db, PREPARE, timeout, roots)
                send = run_dag(af, api, db, SEND, timeout, roots)
        finally:
            sampler.stop()
        print_clocks(prep)
        print_clocks(send)
        print_answer_path(send)
        print_chunk_waits(prep)
        print_chunk_waits(send)
        prepared, prep_chunks = counts(dsn, f"{PREPARE}/{prep.run_id}")
        sent, send_chunks = counts(dsn, f"{SEND}/{send.run_id}")
        celery_times = celery_path(af, [prep, send]) if celery else {}
        stop_airflow(af)
        af = None
        if redis is not None:
            stop_redis(redis)
            redis = None
        baseline.measure("après")
        document_s = baseline.document_s(prepared, sent)
        measured_s = prep.chunk_document_cpu_s + send.chunk_document_cpu_s
        wall_s = prep.wall_s + send.wall_s
        tasks_cpu_s = prep.cpu_s.get(TASKS, 0.0) + send.cpu_s.get(TASKS, 0.0)
        return {
            "invoices": invoices,
            "workers": workers,
            "baseline": baseline,
            "render_rate": baseline.render_rate,
            "send_rate": baseline.send_rate,
            "prepared": prepared,
            "sent": sent,
            "done": prepared + sent,
            "chunks": prep_chunks + send_chunks,
            "prep_s": prep.wall_s,
            "send_s": send.wall_s,
            "clerk_s": send.clerk_s,
            "wall_s": wall_s,
            "ideal_s": document_s / workers,
            "share": 1 - document_s / workers / wall_s,
            # The same share were the slowest (min) or fastest (max) samples the baseline.
            "share_slow": 1 - baseline.document_s(prepared, sent, min) / workers / wall_s,
            "share_fast": 1 - baseline.document_s(prepared, sent, max) / workers / wall_s,
            "document_s": document_s,
            # The document step's CPU measured where it runs, in the chunks (their log lines).
            "measured_document_s": measured_s,
            "share_measured": 1 - measured_s / workers / wall_s,
            "baseline_over_measured": document_s / measured_s if measured_s else 0.0,
            "tasks_cpu_s": tasks_cpu_s,
            "throughput": (prepared + sent) / wall_s,
            **task_figures([prep, send], workers),
            "answer_to_ready_s": answer_path(send).get("answer_to_ready_s", float("nan")),
            **{
                f"cpu:{name}": prep.cpu_s.get(name, 0.0) + send.cpu_s.get(name, 0.0)
                for name in {*prep.cpu_s, *send.cpu_s}
            },
            **celery_times,
            # Not components: the machine's busy and iowait CPU over the same spans.
            **{
                key: prep.machine_s.get(key, 0.0) + send.machine_s.get(key, 0.0)
                for key in (MACHINE_BUSY, MACHINE_IOWAIT)
            },
            "requests": prep.requests + send.requests,
            "idle_phases": {
                run.dag_id: idle_by_phase(run, sampler.samples) for run in (prep, send)
            },
            "peak_mib": {
                task_id: max(run.peak_mib.get(task_id, 0) for run in (prep, send))
                for task_id in sorted(prep.peak_mib.keys() | send.peak_mib.keys())
            },
        }
    finally:
        if af is not None:
            stop_airflow(af)
        if redis is not None:
            stop_redis(redis)
        cluster.stop()
        if os.environ.get("POSTIER_BENCH_KEEP") != "1":
            shutil.rmtree(base, ignore_errors=True)


ROWS = (
    ("documents/s, 1 cœur (rendu Factur-X)", "render_rate", "{:.1f}"),
    ("documents/s, 1 cœur (rendu + signature)", "send_rate", "{:.1f}"),
    ("préparées + envoyées", "done", "{:.0f}"),
    ("paquets", "chunks", "{:.0f}"),
    ("tâches de paquets (mappées)", "mapped_tasks", "{:.0f}"),
    ("durée préparation, déclenchement → succès (s)", "prep_s", "{:.1f}"),
    ("durée envoi, déclenchement → succès, sans la réponse (s)", "send_s", "{:.1f}"),
    ("durée idéale = travail documentaire / workers (s)", "ideal_s", "{:.1f}"),
    ("part d'orchestration (cible ≤ 25 % à 10 000)", "share", "{:.0%}"),
    (
        "part d'orchestration, travail documentaire mesuré dans les tâches",
        "share_measured",
        "{:.0%}",
    ),
    ("débit (factures/s, préparation + envoi)", "throughput", "{:.1f}"),
    (
        "temps des slots hors travail des paquets, 1re mise en file → dernière fin (slot·s)",
        "mapped_idle_s",
        "{:.1f}",
    ),
    (
        "surcoût par tâche mappée : ce temps / tâches de paquets (s, cible ≤ 1,5)",
        "mapped_overhead_s",
        "{:.2f}",
    ),
    (
        "slots inoccupés pendant les paquets, 1er début → dernière fin (slot·s)",
        "idle_slot_s",
        "{:.1f}",
    ),
    ("attente en file d'une tâche hors paquets, moyenne (s)", "queue_wait_s", "{:.2f}"),
    ("tâches hors paquets (2 exécutions, sans la confirmation)", "serial_tasks", "{:.0f}"),
    (
        "coût des tâches hors paquets : attente + durée, sélection et livraison comprises (s)",
        "serial_s",
        "{:.1f}",
    ),
    (
        "dont livraison de l'envoi, dans la tâche de paquet qui finit l'exécution (s)",
        "delivery_s",
        "{:.1f}",
    ),
    (
        "dont sélection, dans la première tâche de paquet ou la confirmation de l'envoi (s)",
        "selection_s",
        "{:.1f}",
    ),
    ("processus de tâche prêt à travailler, médiane (s, cible ≤ 0,5)", "ready_median_s", "{:.2f}"),
    ("processus de tâche prêt à travailler, max (s)", "ready_max_s", "{:.2f}"),
    ("puis environment() (connexions lues à l'usage), médiane (s)", "env_median_s", "{:.2f}"),
    (
        "déclenchement → première tâche démarrée, moyenne des 2 exécutions (s)",
        "first_task_s",
        "{:.2f}",
    ),
    ("écart entre deux tâches successives, moyenne (s)", "gap_mean_s", "{:.2f}"),
    ("écart max entre deux tâches successives (s)", "gap_max_s", "{:.2f}"),
    ("somme des écarts entre tâches successives, 2 exécutions (s)", "gaps_s", "{:.1f}"),
    (
        "réponse du commis → première tâche de paquet de l'envoi prête (s)",
        "answer_to_ready_s",
        "{:.2f}",
    ),
)


def print_cpu_account(figures: dict[str, Any], what: str = "") -> None:
    """Where the CPU went from trigger to success of both runs: seconds per component and share
    of what the machine had (wall time × cores, the clerk's answer left out); the requests the
    api-server answered meanwhile, by kind."""
    available = figures["wall_s"] * CORES
    cpu = {key[4:]: value for key, value in figures.items() if key.startswith("cpu:")}
    print(
        f"\nCPU de la préparation + envoi{what}, par composant "
        f"({CORES} cœurs × {figures['wall_s']:.1f} s de mur)"
    )
    print("| composant | CPU (s) | part de mur × cœurs |\n|---|---:|---:|")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds:.1f} | {seconds / available:.1%} |")
    total = sum(cpu.values())
    print(f"| **total** | {total:.1f} | {total / available:.1%} |")
    if MACHINE_BUSY in figures:
        # The machine's busy CPU beyond the processes followed: the kernel's own threads
        # (writeback of the run's files…), other processes; what is left of wall × cores idled,
        # part of it while a disk request was outstanding.
        others = figures[MACHINE_BUSY] - total
        idle = available - figures[MACHINE_BUSY]
        print(
            f"| noyau et processus non suivis (machine occupée − total) | {others:.1f} | "
            f"{others / available:.1%} |\n| cœurs inactifs | {idle:.1f} | {idle / available:.1%} |"
            f"\n| dont en attente d'entrées-sorties (iowait) | {figures[MACHINE_IOWAIT]:.1f} | "
            f"{figures[MACHINE_IOWAIT] / available:.1%} |"
        )
    requests: Counter[str] = figures["requests"]
    print(f"\n| requêtes à l'api-server{what} | nombre | par seconde de mur |\n|---|---:|---:|")
    for kind, _match in REQUEST_KINDS:
        count = requests.get(kind, 0)
        print(f"| {kind} | {count} | {count / figures['wall_s']:.2f} |")
    total_requests = sum(requests.values())
    print(f"| **total** | {total_requests} | {total_requests / figures['wall_s']:.2f} |")


def print_baseline(figures: dict[str, Any], what: str = "") -> None:
    """The samples of the one-core rates the share divides by, the share at the slowest and the
    fastest of them, the share against the document step's CPU measured in the chunks and the
    baseline's document time over it, and the document work the baseline predicts against the
    task processes' CPU."""
    figures["baseline"].print(what)
    print(
        f"part d'orchestration{what} : {figures['share']:.1%} à la médiane, "
        f"{figures['share_slow']:.1%} au plus lent des échantillons, "
        f"{figures['share_fast']:.1%} au plus rapide"
    )
    print(
        f"part d'orchestration{what}, travail documentaire mesuré dans les tâches : "
        f"{figures['share_measured']:.1%} (CPU du rendu + signature dans les paquets : "
        f"{figures['measured_document_s']:.1f} s ; travail documentaire à la médiane / ce CPU "
        f"mesuré : {figures['document_s']:.1f} / {figures['measured_document_s']:.1f} s = "
        f"{figures['baseline_over_measured']:.2f})"
    )
    if figures["tasks_cpu_s"]:
        print(
            f"travail documentaire à la médiane / CPU des processus de tâches : "
            f"{figures['document_s']:.1f} / {figures['tasks_cpu_s']:.1f} s = "
            f"{figures['document_s'] / figures['tasks_cpu_s']:.2f} (le reste : leur travail "
            f"hors documents, tâches autour des paquets comprises)"
        )


def our_cpu_s(figures: dict[str, float]) -> float:
    """CPU seconds of Airflow, its tasks and PostgreSQL in a measure (not this bench's)."""
    return sum(v for k, v in figures.items() if k.startswith("cpu:") and k != f"cpu:{BENCH}")


CELERY_ROWS = (
    ("préparées + envoyées", "done", "{:.0f}"),
    ("paquets", "chunks", "{:.0f}"),
    ("tâches de paquets (mappées)", "mapped_tasks", "{:.0f}"),
    ("durée préparation + envoi (s)", "wall_s", "{:.1f}"),
    ("débit (factures/s)", "throughput", "{:.1f}"),
    ("part d'orchestration", "share", "{:.0%}"),
    (
        "part d'orchestration, travail documentaire mesuré dans les tâches",
        "share_measured",
        "{:.0%}",
    ),
    ("surcoût par tâche mappée (s)", "mapped_overhead_s", "{:.2f}"),
    ("tâche en file → message reçu par un worker, médiane (s)", "queued_to_worker_s", "{:.2f}"),
    ("message reçu → tâche démarrée (superviseur), médiane (s)", "worker_to_start_s", "{:.2f}"),
    ("processus de tâche prêt à travailler, médiane (s)", "ready_median_s", "{:.2f}"),
    ("fin de la tâche → worker libre, médiane (s)", "end_to_worker_done_s", "{:.2f}"),
    ("écart entre deux tâches successives, moyenne (s)", "gap_mean_s", "{:.2f}"),
    ("CPU d'Airflow, des tâches et de PostgreSQL (s)", "cpu_s", "{:.1f}"),
    ("cœurs occupés en moyenne (CPU / durée)", "cores", "{:.2f}"),
)


# -- E-mail phase (`--mail-invoices`) ----------------------------------------------------------

#: Each e-mail the server accepted, as the deliverer logs it (`postier.pipeline.mailing`), with
#: its log line's time.
MAIL_SENT_AT = re.compile(r'"timestamp":"([^"]+)"[^\n]*"event":"Courriel (<[^>"]+>) envoyé à ')
#: The deliveries' log line (`DELIVERY_LOG`), with its time: the end of the deliveries.
DELIVERY_AT = re.compile(
    r'"timestamp":"([^"]+)"[^\n]*"event":"Livraison de l\'envoi \(courriels, plateforme '
    r"agréée\) en ([0-9.]+) s"
)
#: Postier's e-mail rate setting; its default is the migrations'.
RATE = "COURRIELS_PAR_MINUTE"
#: Not an address anyone receives: the server the bench starts takes every message.
MAIL_DOMAIN = "clients.example"


class MailLost(RuntimeError):
    """An e-mail the send should have delivered that the SMTP server did not receive exactly
    once, or that the send's records or report state otherwise."""


class MailTooClose(RuntimeError):
    """Two e-mails received by the SMTP server closer than the rate limit's interval: what a
    relay's quota may refuse."""


def closest_arrivals_ms(received: list[Any]) -> float:
    """The shortest time between two e-mails' arrivals at the SMTP server (`Received.at`), ms;
    infinite for fewer than two."""
    arrivals = sorted(message.at for message in received)
    return min((b - a for a, b in pairwise(arrivals)), default=float("inf")) * 1000


def seed_mail_database(
    cluster: LocalCluster, invoices: int, rounds: int
) -> tuple[str, list[list[int]]]:
    """Demo invoices for `rounds` prepare + send of `invoices` each, every one to a customer of
    its own who takes e-mail (the portal channel, an address): one e-mail per invoice sent, as
    at month end, where each customer gets the message of its invoice. Artis dematerialisation
    on (the demo bench's seeding turns it off). The application DSN and the ids of each round's
    invoices, all of them « Conservé en interne » until their round."""
    # Seeded invoices are ≈ 77 % waiting (the rest: the demo's sent history, the ones it
    # leaves for the clerk): enough for every round.
    dsn = seed_demo_database(cluster, invoices * rounds * 3 // 2)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE settings SET value = 'true' WHERE key = 'DEMAT_ARTIS'")
        waiting = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM invoices WHERE send_state = 'EN_ATTENTE' ORDER BY id"
            ).fetchall()
        ]
        if len(waiting) < invoices * rounds:
            raise RuntimeError(f"{len(waiting)} invoices seeded, {invoices * rounds} needed")
        chosen = waiting[: invoices * rounds]
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'customers' AND is_generated = 'NEVER' "
                "AND is_identity = 'NO' AND column_name NOT IN ('code', 'channel', 'emails') "
                "ORDER BY ordinal_position"
            ).fetchall()
        ]
        copied = sql.SQL(", ").join(map(sql.Identifier, columns))
        from_customer = sql.SQL(", ").join(sql.Identifier("c", column) for column in columns)
        # A copy of each invoice's customer, named after the invoice, on the portal.
        conn.execute(
            sql.SQL(
                "WITH copies AS (INSERT INTO customers (code, channel, emails, {copied}) "
                "SELECT 'COURRIEL' || lpad(i.id::text, 10, '0'), 'portail', "
                "ARRAY['facture-' || i.id || '@' || %s], {from_customer} "
                "FROM invoices i JOIN customers c ON c.id = i.customer_id WHERE i.id = ANY(%s) "
                "RETURNING id, code) "
                "UPDATE invoices i SET customer_id = copies.id FROM copies "
                "WHERE copies.code = 'COURRIEL' || lpad(i.id::text, 10, '0')"
            ).format(copied=copied, from_customer=from_customer),
            (MAIL_DOMAIN, chosen),
        )
        conn.execute(
            "UPDATE invoices SET send_state = 'CONSERVE_INTERNE' WHERE send_state <> 'ENVOYE'"
        )
        conn.execute("ANALYZE customers, invoices")
    return dsn, [chosen[k * invoices : (k + 1) * invoices] for k in range(rounds)]


def _mail_log(af: Airflow, run: RunTiming) -> tuple[list[tuple[datetime, str]], datetime | None]:
    """From a send's task logs: each e-mail accepted by the server (when, Message-ID), in time
    order, and when the deliveries ended (None: not logged)."""
    sent: list[tuple[datetime, str]] = []
    ended: datetime | None = None
    folder = af.home / "logs" / f"dag_id={run.dag_id}" / f"run_id={run.run_id}"
    for log_file in sorted(folder.rglob("*.log")):
        text = log_file.read_text(errors="replace")
        sent += [(datetime.fromisoformat(at), mid) for at, mid in MAIL_SENT_AT.findall(text)]
        for at, _seconds in DELIVERY_AT.findall(text):
            ended = datetime.fromisoformat(at)
    return sorted(sent), ended


def check_mail(
    dsn: str, run: RunTiming, received: list[Any], logged: list[tuple[datetime, str]]
) -> int:
    """The e-mails of the send `run`, checked against what the SMTP server received
    (`received`, its messages of the run) and what the deliverer logged: the number expected
    (one per invoice the send processed, each to a customer of its own on the portal), each
    received exactly once with the Message-ID the outbox gave it, every outbox row sent, the
    report saying so. `MailLost` otherwise; the number of e-mails."""
    from email.parser import BytesHeaderParser

    external_id = f"{run.dag_id}/{run.run_id}"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM runs r JOIN run_items ri ON ri.run_id = r.id "
            "JOIN invoices i ON i.id = ri.invoice_id JOIN customers c ON c.id = i.customer_id "
            "WHERE r.external_id = %s AND ri.status = 'traitee' AND c.channel = 'portail'",
            (external_id,),
        ).fetchone()
        expected = int(row[0]) if row else 0
        outbox = dict(
            conn.execute(
                "SELECT o.message_id, o.status FROM outbox o JOIN runs r ON r.id = o.run_id "
                "WHERE r.external_id = %s",
                (external_id,),
            ).fetchall()
        )
        report = conn.execute(
            "SELECT report -> 'courriels' FROM runs WHERE external_id = %s", (external_id,)
        ).fetchone()
    headers = BytesHeaderParser()
    arrived = Counter(str(headers.parsebytes(r.data)["Message-ID"]).strip() for r in received)
    problems = []
    if not expected:
        problems.append("no e-mail expected: the send processed no portal customer's invoice")
    if len(outbox) != expected:
        problems.append(f"{len(outbox)} outbox rows for {expected} customers")
    if unsent := {mid: status for mid, status in outbox.items() if status != "envoye"}:
        problems.append(f"{len(unsent)} outbox rows not sent: {dict(Counter(unsent.values()))}")
    if doubled := {mid: n for mid, n in arrived.items() if n > 1}:
        problems.append(
            f"{len(doubled)} e-mails received more than once, e.g. {next(iter(doubled))}"
        )
    if lost := outbox.keys() - arrived.keys():
        problems.append(f"{len(lost)} e-mails never received, e.g. {next(iter(lost))}")
    if foreign := arrived.keys() - outbox.keys():
        problems.append(f"{len(foreign)} e-mails received that the run's outbox does not have")
    if sum(arrived.values()) != expected:
        problems.append(f"{sum(arrived.values())} e-mails received for {expected} expected")
    if len(logged) != expected or {mid for _at, mid in logged} != outbox.keys():
        problems.append(f"{len(logged)} e-mails logged as sent by the deliverer for {expected}")
    said = report[0] if report else None
    if (
        not said
        or (said["envoyes"], said["remis_smtp"]) != (expected, expected)
        or any(said[key] for key in ("en_attente", "incertains", "en_erreur"))
    ):
        problems.append(f"the run's report says {said} for {expected} e-mails sent")
    if problems:
        raise MailLost(f"e-mails of {external_id}: " + "; ".join(problems))
    return expected


def mail_figures(
    af: Airflow, dsn: str, prep: RunTiming, send: RunTiming, received: list[Any], workers: int
) -> dict[str, float]:
    """A prepare + send's e-mail figures, once `check_mail` found every e-mail received once:
    the deliveries' wall time in all and per e-mail, split into the composition (their start →
    the first e-mail accepted) and the spacing of the e-mails accepted; the CPU per e-mail
    meanwhile (the deliverer's task process, PostgreSQL, the SMTP server in this bench's
    process), interpolated between the polls' `cpu_account` samples, their background included
    (Airflow's statements in PostgreSQL, this bench's polls: more per e-mail the longer the
    deliveries last, as at a rate limit); against the document
    step measured in the same send's chunks (their render + sign CPU per invoice, and over the
    slots)."""
    logged, ended = _mail_log(af, send)
    emails = check_mail(dsn, send, received, logged)
    assert ended is not None, "the send's deliveries were not logged"
    sent, _chunks = counts(dsn, f"{send.dag_id}/{send.run_id}")
    start = ended.timestamp() - send.delivery_s
    before = cpu_at(send.cpu_samples, start)
    after = cpu_at(send.cpu_samples, ended.timestamp())

    def cpu_ms(name: str) -> float:
        return (after.get(name, 0.0) - before.get(name, 0.0)) / emails * 1000

    # When the deliverer logged each e-mail sent (« Courriel … envoyé à »): after the server's
    # answer and its outbox row's update, just before that row's commit.
    first, last = logged[0][0], logged[-1][0]
    spacing_s = (last - first).total_seconds() / max(1, emails - 1)
    return {
        "emails": emails,
        "mail_prepared": counts(dsn, f"{prep.dag_id}/{prep.run_id}")[0],
        "mail_sent": sent,
        "mail_prep_s": prep.wall_s,
        "mail_send_s": send.wall_s,
        "delivery_s": send.delivery_s,
        "delivery_ms": send.delivery_s / emails * 1000,
        "compose_s": first.timestamp() - start,
        "spacing_ms": spacing_s * 1000,
        "per_minute": 60 / spacing_s if spacing_s else math.nan,
        "closest_ms": closest_arrivals_ms(received),
        "tasks_ms": cpu_ms(TASKS),
        "postgres_ms": cpu_ms("PostgreSQL"),
        "smtp_ms": cpu_ms(BENCH),
        **delivery_against_documents(
            send.delivery_s, emails, send.chunk_document_cpu_s, sent, workers
        ),
    }


def delivery_against_documents(
    delivery_s: float, emails: int, document_cpu_s: float, sent: int, workers: int
) -> dict[str, float]:
    """The send's document step, CPU per invoice sent (`document_ms`, the chunks' « documents …
    de CPU »), and the deliveries against it: per e-mail against per invoice, and in all against
    the step spread over the `workers` slots. NaN (printed « — ») when no chunk logged document
    CPU (a send whose invoices were all refused, or chunk lines not found), rather than a
    division by zero that lost the whole bench's figures."""
    if document_cpu_s <= 0 or sent <= 0:
        return dict.fromkeys(
            ("document_ms", "delivery_over_document", "delivery_over_send_documents"), math.nan
        )
    document_ms = document_cpu_s / sent * 1000
    return {
        "document_ms": document_ms,
        "delivery_over_document": delivery_s / emails * 1000 / document_ms,
        "delivery_over_send_documents": delivery_s / (document_cpu_s / workers),
    }


def measure_mail(invoices: int, workers: int, timeout: float) -> list[dict[str, float]]:
    """Prepare then send `invoices` demo invoices whose customers take e-mail, each to a
    customer of its own, through a real Airflow (LocalExecutor, `workers` slots) and a real
    SMTP server (aiosmtpd, the tests' `SmtpServer`, in this process): first without a rate
    limit (`COURRIELS_PAR_MINUTE` = 0), then at the setting's default, on other invoices of
    the same database. Every e-mail checked received exactly once (`MailLost` otherwise)."""
    from integration.smtp_server import SmtpServer

    base = Path(tempfile.mkdtemp(prefix="postier-airflow-mail-"))
    base.chmod(0o755)
    cluster = bench_cluster(base)
    smtp = SmtpServer()
    af: Airflow | None = None
    try:
        dsn, rounds = seed_mail_database(cluster, invoices, 2)
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (RATE,)).fetchone()
        assert row is not None, f"no {RATE} setting"
        default_rate = int(row[0])
        smtp.start()
        metadata = metadata_database(cluster, "airflow_mail_bench")
        af = Airflow(home=base / "airflow", postier_dsn=dsn, postier_home=base / "postier-home")
        af.settings = {
            "POSTIER_WORKERS": str(workers),
            "AIRFLOW__CORE__PARALLELISM": str(workers),
            "POSTIER_SMTP_URL": smtp.url(),
        }
        af.home.mkdir()
        start_airflow(af, metadata)
        roots = account_roots(af, cluster)
        metadata_dsn = metadata.replace("postgresql+psycopg://", "postgresql://", 1)
        results = []
        with af.client(CLERK) as api, psycopg.connect(metadata_dsn, autocommit=True) as db:
            for rate, ids in zip((0, default_rate), rounds, strict=True):
                with psycopg.connect(dsn) as conn:
                    conn.execute("UPDATE settings SET value = %s WHERE key = %s", (str(rate), RATE))
                    # The invoices of the round before left waiting (refused) or ready: out.
                    conn.execute(
                        "UPDATE invoices SET send_state = 'CONSERVE_INTERNE' "
                        "WHERE send_state IN ('EN_ATTENTE', 'PRET')"
                    )
                    conn.execute(
                        "UPDATE invoices SET send_state = 'EN_ATTENTE' WHERE id = ANY(%s)", (ids,)
                    )
                already = len(smtp.received)
                prep = run_dag(af, api, db, PREPARE, timeout, roots)
                send = run_dag(af, api, db, SEND, timeout, roots)
                received = smtp.received[already:]
                figures = mail_figures(af, dsn, prep, send, received, workers)
                if rate and figures["closest_ms"] < 60_000 / rate:
                    raise MailTooClose(
                        f"two e-mails received {figures['closest_ms']:.1f} ms apart at "
                        f"{rate} a minute ({60_000 / rate:.1f} ms)"
                    )
                results.append({"rate": rate, **figures})
        return results
    finally:
        if af is not None:
            stop_airflow(af)
        smtp.stop()
        cluster.stop()
        if os.environ.get("POSTIER_BENCH_KEEP") != "1":
            shutil.rmtree(base, ignore_errors=True)


MAIL_ROWS = (
    ("factures préparées / envoyées", None, ""),
    ("courriels envoyés = reçus une fois chacun par le serveur SMTP", "emails", "{:.0f}"),
    ("durée préparation, déclenchement → succès (s)", "mail_prep_s", "{:.1f}"),
    ("durée envoi, déclenchement → succès, sans la réponse (s)", "mail_send_s", "{:.1f}"),
    ("livraison de l'envoi, dans la tâche de paquet qui le finit (s)", "delivery_s", "{:.1f}"),
    ("**livraison par courriel (ms)**", "delivery_ms", "{:.1f}"),
    (
        "dont composition : début de la livraison → premier courriel journalisé « envoyé » (s)",
        "compose_s",
        "{:.1f}",
    ),
    (
        "écart moyen entre deux courriels journalisés « envoyé » par le livreur (après la "
        "réponse du serveur, avant le commit de leur ligne) (ms)",
        "spacing_ms",
        "{:.1f}",
    ),
    ("soit courriels journalisés « envoyé » par minute", "per_minute", "{:.0f}"),
    ("écart le plus court entre deux courriels reçus par le serveur (ms)", "closest_ms", "{:.1f}"),
    ("CPU pendant la livraison / courriels : processus de tâches (ms)", "tasks_ms", "{:.2f}"),
    ("CPU pendant la livraison / courriels : PostgreSQL (ms)", "postgres_ms", "{:.2f}"),
    (
        "CPU pendant la livraison / courriels : serveur SMTP (aiosmtpd, dans ce banc) (ms)",
        "smtp_ms",
        "{:.2f}",
    ),
    (
        "étape documentaire de l'envoi, CPU par facture dans les paquets (ms ; — : aucun paquet "
        "n'en a journalisé)",
        "document_ms",
        "{:.2f}",
    ),
    ("livraison par courriel / étape documentaire par facture", "delivery_over_document", "{:.2f}"),
    (
        "livraison / travail documentaire de l'envoi par slot",
        "delivery_over_send_documents",
        "{:.2f}",
    ),
)


def print_mail(invoices: int, workers: int, results: list[dict[str, float]]) -> None:
    """The e-mail phase's table, one column per rate, and what the default rate costs."""
    unlimited, limited = results
    print(
        f"\nCourriels avec Airflow réel (LocalExecutor, parallelism = POSTIER_WORKERS = "
        f"{workers}), préparation + envoi de N = {invoices} factures, chacune à un client à "
        "courriel (portail), serveur SMTP local (aiosmtpd)"
    )
    print(
        f"| mesure | {RATE} = 0 (sans limite) | {RATE} = {limited['rate']:.0f} (défaut) |"
        "\n|---|---:|---:|"
    )
    for label, key, fmt in MAIL_ROWS:
        if key is None:
            cells = [f"{r['mail_prepared']:.0f} / {r['mail_sent']:.0f}" for r in results]
        else:
            cells = [fmt.format(r[key]) if math.isfinite(r[key]) else "—" for r in results]
        print(f"| {label} | {' | '.join(cells)} |")
    imposed = (
        limited["delivery_s"] - unlimited["delivery_s"] * limited["emails"] / unlimited["emails"]
    )
    print(
        f"temps imposé par la limite par défaut ({limited['rate']:.0f}/min, "
        f"{60_000 / limited['rate']:.0f} ms entre deux courriels) : {imposed:.1f} s pour "
        f"{limited['emails']:.0f} courriels ({imposed / limited['emails'] * 1000:.1f} ms par "
        f"courriel, livraison à sa durée sans limite retirée) ; sans limite, un livreur remet "
        f"au plus {60_000 / unlimited['delivery_ms']:.0f} courriels par minute "
        f"(60 000 ms / {unlimited['delivery_ms']:.1f} ms)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--invoices", type=int, default=2_000, help="LocalExecutor run (0: the Celery ones only)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--celery-invoices",
        type=int,
        default=None,
        help="invoices of the Celery 1 vs 2 workers runs (default --invoices; 0: not run)",
    )
    parser.add_argument(
        "--mail-invoices",
        type=int,
        default=0,
        help="invoices of the e-mail runs, each to a customer taking e-mail, to a local SMTP "
        "server, without then with the default rate limit (default 0: not run)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    args = parser.parse_args()
    started = time.monotonic()
    if args.invoices > 0:
        local = measure(args.invoices, args.workers, args.timeout)
        print(
            f"\nAirflow réel (LocalExecutor, parallelism = POSTIER_WORKERS = {args.workers}), "
            f"préparation + envoi de N = {args.invoices} factures de démonstration"
        )
        print("| mesure | valeur |\n|---|---:|")
        for label, key, fmt in ROWS:
            print(f"| {label} | {fmt.format(local[key])} |", flush=True)
        print_baseline(local)
        print_cpu_account(local)
        print_idle_phases(local)
        print("\n| mémoire max d'un processus de tâche (VmHWM, Mio) | valeur |\n|---|---:|")
        for task_id, peak in local["peak_mib"].items():
            print(f"| {task_id} | {peak} |")
    celery_n = args.invoices if args.celery_invoices is None else args.celery_invoices
    if celery_n > 0:
        one = measure(celery_n, 1, args.timeout, celery=True)
        two = measure(celery_n, 2, args.timeout, celery=True)
        for figures in (one, two):
            figures["cpu_s"] = our_cpu_s(figures)
            figures["cores"] = figures["cpu_s"] / figures["wall_s"]
        print(
            f"\nAirflow réel (CeleryExecutor, workers d'un slot chacun, POSTIER_WORKERS = nombre "
            f"de workers), N = {celery_n}"
        )
        print("| mesure | 1 worker | 2 workers |\n|---|---:|---:|")
        for label, key, fmt in CELERY_ROWS:
            print(f"| {label} | {fmt.format(one[key])} | {fmt.format(two[key])} |")
        speed_up = two["throughput"] / one["throughput"]
        print(f"\nAccélération de 2 workers Celery sur 1 (débit) : {speed_up:.2f} × (cible ≥ 1,7)")
        # 2 workers end no sooner than the machine's cores can run the CPU they used.
        bound = one["wall_s"] * CORES / two["cpu_s"] * two["done"] / one["done"]
        print(
            f"au plus {bound:.2f} × sur ces {CORES} cœurs : durée à 1 worker × {CORES} cœurs / "
            f"CPU à 2 workers = {one['wall_s']:.1f} × {CORES} / {two['cpu_s']:.1f}"
        )
        print_baseline(one, ", Celery 1 worker")
        print_baseline(two, ", Celery 2 workers")
        print_cpu_account(one, ", Celery 1 worker")
        print_cpu_account(two, ", Celery 2 workers")
    if args.mail_invoices > 0:
        mail = measure_mail(args.mail_invoices, args.workers, args.timeout)
        print_mail(args.mail_invoices, args.workers, mail)
    print(f"\n(banc Airflow : {time.monotonic() - started:.0f} s en tout, démarrages compris)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
