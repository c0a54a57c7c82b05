"""A real Airflow run as subprocesses for the end-to-end tests (see `conftest.py`).

`start_airflow` migrates the metadata database then starts api-server, scheduler, dag-processor and
triggerer, each in its own process group with its own log file; `Airflow` is the handle the tests
use (REST client as a named user, bounded waits, log tails for assertion messages).

The LocalExecutor by default; with `executor=CELERY` and a `broker_url` (see `live_redis.py`), the
CeleryExecutor and `celery_workers` Celery workers (`airflow celery worker`), each with its own
POSTIER_HOME as if on its own host (`worker_home`), the Celery results in the metadata database.
Every process gets the same generated Fernet key and JWT secret: Airflow 3 api-server and workers
refuse each other's tokens otherwise. `settings` go to every process.
No pytest here: `bench/` reuses it too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from cryptography.fernet import Fernet

from postier.store.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

#: Airflow users of the tests (login:role); the clerk who triggers and confirms is `jmartin`, a
#: plain user (no right to change the configuration, hence Postier's settings).
USERS = ("jmartin:user", "ldurand:admin", "admin:admin")

#: Bounds of every wait, in seconds (the whole module is meant to run in a few minutes).
MIGRATE_TIMEOUT = 240
HEALTH_TIMEOUT = 120
DAG_PARSED_TIMEOUT = 120
TASK_STATE_TIMEOUT = 120
RUN_TIMEOUT = 180
PARK_TIMEOUT = 60
POLL = 0.5

T = TypeVar("T")

#: The LocalExecutor of production: its task processes start with Postier's code imported
#: (`postier.airflow.executors`, README § Performance).
LOCAL = "postier.airflow.executors.PreloadingLocalExecutor"
#: Airflow's CeleryExecutor of production, its scheduler sleeping longer while tasks are with
#: Celery (`postier.airflow.celery_executor`).
CELERY = "postier.airflow.celery_executor.WakingCeleryExecutor"

#: Celery settings of production (`docker/compose.yaml`, README § Performance), so measured.
CELERY_SETTINGS = {
    # The scheduler publishes the tasks it queues itself. With more than one (the default: one
    # per core but one) it forks a pool of processes for every batch of tasks it sends, each
    # building its own Celery app and broker connection, to publish a few messages.
    "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
    # A worker reserves no task beyond those it runs (a task's message is acknowledged when it
    # ends): no chunk waits behind another on a busy worker while a slot is free on another.
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
    # No « started » result written by the worker before each task: Airflow reads a started
    # task as a pending one (it adopts a dead scheduler's tasks by their pre-assigned Celery
    # id), and the first such write of a worker's pool process (the result backend's first use)
    # delayed its first task by 0.6 s and more.
    "AIRFLOW__CELERY__TASK_TRACK_STARTED": "False",
    # The scheduler queues a task as soon as its upstream succeeded, whatever the workers' slots
    # (their concurrency is the limit that counts): it waits in Redis for the first free slot.
    # Equal to the slots, a task could be queued only once the executor had read the previous
    # task's result, a second or more after its end (README § Performance). Above the workers'
    # slots in total, as Airflow's default (32) is.
    "AIRFLOW__CORE__PARALLELISM": "32",
    # Airflow's Celery configuration, with Postier's task code imported by each worker before
    # it forks its pool (`postier.airflow.celery_config`).
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "postier.airflow.celery_config.CELERY_CONFIG",
}

#: The time after which the scheduler fails a task whose process stopped heart-beating (a worker
#: killed): its retry then goes to another worker. Airflow's default is 5 minutes.
HEARTBEAT_TIMEOUT = 15

#: Airflow settings of production (`docker/compose.yaml`, README § Performance), for every
#: process the harness starts: the tests and `make bench` run what production runs.
PRODUCTION_SETTINGS = {
    # One heartbeat every 5 s per running task to the api-server (Airflow's default, stated: it
    # was 1 when the supervisor noticed its task's end only when this wait timed out; now
    # `postier.airflow.task_exit` frees the slot when the process ends, whatever the interval).
    # Each heartbeat is a request to the api-server and an UPDATE in Airflow's database.
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
    # Our DAG files change only with a new image, which restarts the dag-processor (it parses
    # every file at start): re-parsing them every 30 s (default) and listing the folder every
    # 300 s takes CPU from the chunks for nothing.
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3600",
    # The scheduler sleeps this long when a loop had nothing to do (default 1 s): a task's end, a
    # run triggered or a clerk's answer wake it at once (the `postier_scheduler_wake` plugin).
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    # How long a send's deliverer retry (or `rapport`) waits for the run's delivery lock that an
    # attempt cut off on a dead host still holds, before failing to be retried (Postier's own).
    "POSTIER_DELIVERY_LOCK_WAIT_SECONDS": "300",
}

PROCESSES: dict[str, list[str]] = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}

FINISHED_RUN_STATES = {"success", "failed"}


def _tail(path: Path, chars: int = 4000) -> str:
    if not path.exists():
        return f"(no {path.name})"
    text = path.read_text(errors="replace")
    return text[-chars:]


@dataclass
class Airflow:
    """A running Airflow: its home, its API and its process logs."""

    home: Path
    postier_dsn: str
    postier_home: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    executor: str = LOCAL
    #: The Celery broker (CeleryExecutor only); it carries a password: never logged.
    broker_url: str = field(default="", repr=False)
    celery_workers: int = 0
    #: Task slots per Celery worker.
    worker_concurrency: int = 2
    #: Settings over the defaults of `_environment`, for every process including the workers
    #: (e.g. the benchmark's parallelism, a storage URL).
    settings: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def workers(self) -> list[str]:
        """Names of the Celery workers (also their process and log names)."""
        return [f"worker-{n}" for n in range(1, self.celery_workers + 1)]

    def worker_home(self, worker: str) -> Path:
        """The worker's own POSTIER_HOME (as on its own host)."""
        return self.home / worker / "postier-home"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_file(self, name: str) -> Path:
        return self.home / "process-logs" / f"{name}.log"

    def logs(self, chars: int = 3000) -> str:
        """Tails of every process log, for assertion messages."""
        return "\n".join(
            f"----- {name} ({self.log_file(name)}) -----\n{_tail(self.log_file(name), chars)}"
            for name in [*PROCESSES, *self.workers, "db-migrate"]
        )

    def task_logs(self, dag_id: str, run_id: str, chars: int = 3000) -> str:
        """Tails of the task logs of one run (written by the workers under AIRFLOW_HOME/logs)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        files = sorted(folder.rglob("*.log")) if folder.exists() else []
        return "\n".join(
            f"----- {f.relative_to(folder)} -----\n{_tail(f, chars)}" for f in files
        ) or (f"(no task log under {folder})")

    def postier_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The Postier run (its report's row) of the Airflow run `dag_id`/`run_id`."""
        with psycopg.connect(self.postier_dsn) as conn:
            row = conn.execute(
                "SELECT id, status, triggered_by, counts, report, output_dir FROM runs "
                "WHERE external_id = %s",
                (f"{dag_id}/{run_id}",),
            ).fetchone()
        assert row is not None, f"no Postier run recorded for {dag_id}/{run_id}"
        keys = ("id", "status", "triggered_by", "counts", "report", "output_dir")
        return dict(zip(keys, row, strict=True))

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"Airflow process(es) exited: {dead}\n{self.logs()}"

    def kill_worker(self, worker: str) -> None:
        """SIGKILL a Celery worker with its task processes (a host lost), and forget it."""
        proc = self.processes.pop(worker)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def wait_for(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float,
        context: Callable[[], str] | None = None,
    ) -> T:
        """Poll `probe` until it returns something not None, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                result = probe()
            except (httpx.HTTPError, ValueError) as error:  # not up yet, or not JSON yet
                result, last_error = None, error
            if result is not None:
                return result
            time.sleep(POLL)
        raise AssertionError(
            f"timeout after {timeout:.0f} s waiting for {what}; last error: {last_error!r}\n"
            f"{context() if context else ''}\n{self.logs()}"
        )

    def wait_for_parked_worker_exit(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Wait until the scheduler has seen the worker of a task parked for input exit.

        Airflow 3.3.2 race: if the answer re-queues the task before the scheduler has processed
        the executor's "success" event of the worker that parked it (same try number), the
        scheduler takes the re-queued task for one killed externally and fails it ("finished with
        state success, but the task instance's state attribute is queued"). A clerk never answers
        within that second; a test does, so it waits for the scheduler's own log line.
        """
        line = (
            "Received executor event with state success for task instance TaskInstanceKey("
            f"dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}'"
        )
        scheduler_log = self.log_file("scheduler")

        def seen() -> bool | None:
            return True if line in scheduler_log.read_text(errors="replace") else None

        self.wait_for(f"the scheduler to reap the parked worker ({line!r})", seen, PARK_TIMEOUT)

    # -- API ------------------------------------------------------------------------------

    def password(self, user: str) -> str:
        """The password the api-server generated for `user` (file in AIRFLOW_HOME)."""
        path = self.home / "simple_auth_manager_passwords.json.generated"
        passwords = json.loads(path.read_text())
        assert user in passwords, f"no generated password for {user!r} in {path}"
        return str(passwords[user])

    def client(self, user: str) -> httpx.Client:
        """An API client authenticated as `user` (JWT from POST /auth/token)."""
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": user, "password": self.password(user)},
            timeout=30,
        )
        assert response.status_code == 201, f"login of {user} refused: {response.text}"
        token = response.json()["access_token"]
        return httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def wait_for_dag(self, api: httpx.Client, dag_id: str) -> dict[str, Any]:
        """The DAG once the dag-processor has parsed it; import errors fail at once."""

        def parsed() -> dict[str, Any] | None:
            errors = api.get("/importErrors").json().get("import_errors", [])
            assert not errors, f"DAG import errors: {json.dumps(errors, indent=1)[:4000]}"
            response = api.get(f"/dags/{dag_id}")
            return response.json() if response.status_code == 200 else None

        return self.wait_for(f"DAG {dag_id} to be parsed", parsed, DAG_PARSED_TIMEOUT)


def _environment(af: Airflow, metadata_url: str) -> dict[str, str]:
    home, port = af.home, af.port
    # Start from a clean slate: no AIRFLOW_* or POSTIER_* leaking from the caller (the DAG tests
    # set some at import time when the whole suite runs in one session).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POSTIER_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(DAGS.parent / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": af.executor,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(USERS),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # Generated for this run only: every process must share them.
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            # psycopg 3 for the async engine too (Airflow would pick asyncpg, not installed).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url.replace(
                "postgresql+psycopg://", "postgresql+psycopg_async://", 1
            ),
            **PRODUCTION_SETTINGS,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "POSTIER_DB_DSN": af.postier_dsn,
            "POSTIER_HOME": str(af.postier_home),
            "POSTIER_TASK_RETRIES": "0",
            "POSTIER_RETRY_DELAY_SECONDS": "0",
            "POSTIER_WORKERS": "2",
            "TZ": "Europe/Paris",
        }
    )
    if af.executor == CELERY:
        assert af.broker_url, "the CeleryExecutor needs a broker_url"
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": af.broker_url,
                # SQLAlchemy's psycopg 3 dialect, as the metadata database (no psycopg2 here).
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(af.worker_concurrency),
                **CELERY_SETTINGS,
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__TASK_INSTANCE_HEARTBEAT_SEC": "2",
            }
        )
    env.update(af.settings)
    return env


def start_airflow(af: Airflow, metadata_url: str) -> None:
    """Migrate the metadata database, start the four components, wait until all are healthy."""
    (af.home / "process-logs").mkdir(exist_ok=True)
    env = _environment(af, metadata_url)
    with af.log_file("db-migrate").open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=af.home,
            timeout=MIGRATE_TIMEOUT,
            check=False,
        )
    assert done.returncode == 0, f"airflow db migrate failed\n{af.logs()}"
    for name, args in PROCESSES.items():
        with af.log_file(name).open("wb") as out:
            af.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=af.home,
                start_new_session=True,  # its own process group, stopped as a whole
            )

    def healthy() -> dict[str, Any] | None:
        health = httpx.get(f"{af.base_url}/api/v2/monitor/health", timeout=5).json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        ok = all((health.get(p) or {}).get("status") == "healthy" for p in parts)
        # The execution API too, as the compose file's healthcheck does: its first request
        # builds its versioned routes (seconds, the api-server answering nothing meanwhile),
        # before any task instead of during the first one.
        execution = httpx.get(f"{af.base_url}/execution/health", timeout=HEALTH_TIMEOUT)
        return health if ok and execution.status_code == 200 else None

    af.wait_for("Airflow health (/api/v2/monitor/health)", healthy, HEALTH_TIMEOUT)
    for worker in af.workers:
        start_celery_worker(af, worker, env)


def start_celery_worker(af: Airflow, worker: str, env: dict[str, str]) -> None:
    """`airflow celery worker` named `worker`, its own POSTIER_HOME; until Celery says ready."""
    home = af.worker_home(worker)
    home.mkdir(parents=True, exist_ok=True)
    log = af.log_file(worker)
    with log.open("wb") as out:
        af.processes[worker] = subprocess.Popen(
            [
                *(sys.executable, "-m", "airflow", "celery", "worker"),
                *("--celery-hostname", f"{worker}@%h", "--skip-serve-logs"),
                *("--concurrency", str(af.worker_concurrency)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env | {"POSTIER_HOME": str(home)},
            cwd=home,
            start_new_session=True,
        )

    def ready() -> bool | None:
        # Celery's own line: « worker-1@<host> ready. »
        return (
            True if re.search(rf"{worker}@\S+ ready\.", log.read_text(errors="replace")) else None
        )

    af.wait_for(f"Celery {worker} ready", ready, HEALTH_TIMEOUT)


def stop_airflow(af: Airflow) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left after a grace period."""
    processes = af.processes
    for proc in processes.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    for proc in processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in processes.values():
        # The group may outlive its leader (task workers): kill the group whatever the leader did.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def metadata_database(cluster: LocalCluster, name: str) -> str:
    """Create Airflow's metadata database `name` on `cluster`: its URL, as the owner (Airflow
    creates its tables there), with SQLAlchemy's psycopg 3 dialect."""
    cluster.create_database(name)
    return cluster.owner_dsn(name).replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def running_airflow(
    cluster: LocalCluster,
    name: str,
    template: str = "postier_template",
    configure: Callable[[Airflow], None] | None = None,
    **fields: Any,
) -> Iterator[Airflow]:
    """An Airflow on a temporary AIRFLOW_HOME with a fresh Postier database made from `template`
    (the migrated template of `tests/conftest.py`) and its own metadata database
    (`airflow_<name>`), both on `cluster`; `fields` for `Airflow`, `configure` to complete it once
    its home exists. Afterwards: stopped, both databases dropped, its home removed (kept with
    POSTIER_E2E_KEEP=1)."""
    home = Path(tempfile.mkdtemp(prefix=f"postier-{name}-"))
    home.chmod(0o755)  # services running as other users (sshd, redis) reach folders under it
    postier_db, metadata_db = f"{name}_{uuid.uuid4().hex[:12]}", f"airflow_{name}"
    af = Airflow(home=home, postier_dsn="", postier_home=home / "postier-home", **fields)
    try:
        af.postier_dsn = cluster.create_database(postier_db, template=template)
        if configure is not None:
            configure(af)
        start_airflow(af, metadata_database(cluster, metadata_db))
        yield af
    finally:
        stop_airflow(af)
        cluster.drop_database(postier_db)
        cluster.drop_database(metadata_db)
        if os.environ.get("POSTIER_E2E_KEEP") != "1":
            shutil.rmtree(home, ignore_errors=True)
