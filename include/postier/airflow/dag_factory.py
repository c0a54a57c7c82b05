"""One factory for every treatment DAG: chunks in parallel (the first selects) → finalize → report.

Each DAG has only the tasks its treatment needs (a task process costs its start-up and the
scheduler's gap before the next task): no task of its own for the selection — the chunk tasks,
mapped over the worker slots, start the run (the first to get there selects, the others wait
for it), or the confirmation of a definitive send, which selects and shows what will be sent —
and `finaliser` for a treatment that ends with a file made of the whole run (`FINALIZED`). The
task that ends the run's work writes its report (`finaliser`, else the chunk task that leaves
nothing to process, also when nothing was selected; the confirmation on « Ne pas envoyer » or
when nothing is to send), and for a send first delivers (customer e-mails, then Plateforme
Agréée deposits): no task process of its own for either. `rapport` runs only when a task
failed, and is skipped otherwise, without a task process: by the chunk task that reports the
run's success (`_reported_if_last`) or by `finaliser`, else by the scheduler. Tasks are
one-liners over `postier.pipeline`, imported inside the tasks so that parsing a DAG file loads
no database driver and touches nothing outside Python.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, CronTriggerTimetable, TriggerRule, task
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSkipException,
    DownstreamTasksSkipped,
)

from postier import env_settings
from postier.airflow.params import trigger_params
from postier.airflow.run_note import NOTE_KEY
from postier.domain.selection import PARIS
from postier.domain.treatments import FINALIZED, TreatmentId, treatment

if TYPE_CHECKING:
    from postier.pipeline.context import Environment

log = logging.getLogger(__name__)

#: Every treatment of the catalogue has its DAG.
IMPLEMENTED = tuple(TreatmentId)

#: Treatments whose run ends by e-mailing the portal customers (spec « Courriel type »).
SENDS = (TreatmentId.ENVOYER, TreatmentId.ENVOI_NOCTURNE)

#: Last day of each month, at night, Paris time (spec: « le dernier jour du mois »).
NIGHTLY = CronTriggerTimetable("0 22 L * *", timezone="Europe/Paris")


def chunk_task_count() -> int:
    """Chunk tasks a run maps: one per worker slot (`POSTIER_WORKERS`, as the slots are), fixed
    when the DAG is parsed: the environment only, nothing touched. A bad value is the DAG
    file's import error, in French."""
    return env_settings.workers()


#: What a task's end logs, read by `bench/airflow_bench.py` (peak memory per task kind).
PEAK_MEMORY_LOG = "Mémoire max de la tâche : %d Mio (VmHWM)"
#: Logged by a chunk task that ends the run's work but leaves its delivery to another.
DELIVERED_ELSEWHERE = "Livraison de l'envoi assurée par une autre tâche : rien de plus ici"

#: What the task that selects a run logs (a serial step's work, done in a chunk task or the
#: confirmation), read by `bench/airflow_bench.py`.
SELECTION_LOG = "Sélection de l'exécution (critères, configuration, factures) en %.2f s"

_F = TypeVar("_F", bound=Callable[..., Any])
_R = TypeVar("_R", bound="dict[str, Any] | None")


def peak_memory_kib() -> int:
    """This process's peak resident memory (VmHWM), in KiB; 0 where /proc has none."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def logs_peak_memory(function: _F) -> _F:
    """Log the task process's peak memory when the task ends, whatever the outcome: one line,
    to show it flat in the run's volume."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            log.info(PEAK_MEMORY_LOG, peak_memory_kib() // 1024)

    return wrapper  # type: ignore[return-value]


# Every task finds its run from the Airflow run's identity (`external_id`); the chunk tasks' parts
# are fixed when the DAG is parsed (`chunk_task_count`): nothing travels from task to task.


class SendConfirmation(ApprovalOperator):
    """The spec's confirmation before a definitive send, with the clerk's words for the two
    answers (an approval whose downstream tasks are skipped on « Ne pas envoyer »). It starts
    the run (selects) and shows what will be sent: no task process before it."""

    APPROVE = "Envoyer"
    REJECT = "Ne pas envoyer"

    def execute(self, context: Any) -> Any:
        from postier.airflow.runtime import environment, external_id
        from postier.pipeline.reports import NOTHING_TO_SEND, send_confirmation

        env = environment()
        _start(context, env)
        # What will be sent (a retry or a « Clear » shows it again, selecting nothing more).
        summary = send_confirmation(env, external_id(context))
        if not summary:
            # Nothing to confirm: the run's work ends here (what earlier sends left pending is
            # delivered, the report says nothing was to send), the confirmation and the chunks
            # are skipped.
            _end_run(context, env, chunk_task_count())
            raise AirflowSkipException(NOTHING_TO_SEND)
        self.body = summary
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        try:
            return super().execute_complete(context, event)
        except DownstreamTasksSkipped:
            # « Ne pas envoyer » (or no answer in time): the chunks are skipped, and with them
            # `rapport`; the run's work ends here, its report says nothing was sent.
            from postier.airflow.runtime import environment

            _report(context, environment(), refused=True)
            raise


def _start(context: Any, env: Environment) -> None:
    """Make sure the run is started: selected once, by whichever of its tasks gets here first
    (`ensure_started`). Refused (invalid criteria, configuration): the run is recorded as refused
    with its report, once, and every task that starts it fails at once — no retry — with the
    French reason."""
    from postier.airflow.runtime import actor, external_id
    from postier.errors import ConfigurationError, SelectionError, SigningError
    from postier.pipeline.reports import RefusedAtStartError
    from postier.pipeline.runs import ensure_started

    dag_id, params = context["dag"].dag_id, dict(context["params"])
    started = time.perf_counter()
    try:
        selected = ensure_started(env, dag_id, params, actor(context), external_id(context))
    except (SelectionError, ConfigurationError, SigningError, RefusedAtStartError) as error:
        raise AirflowFailException(str(error)) from None
    if selected:
        log.info(SELECTION_LOG, time.perf_counter() - started)


# « paquet », never « lot »: in the ERP a « numéro de lot » is a selection criterion. One task per
# worker slot, each taking chunks until none is left (`process_part`): a task process per chunk
# cost its start-up, scheduling and slot release, and static chunks never end together. Each
# first makes sure the run is started (`_start`): a run with fewer chunks than tasks leaves the
# extra ones nothing to do, and they end.
# multiple_outputs=False: a task returning a dict would push each key as an XCom of its own
# besides the whole dict (one api-server request each: 4 more per task), which nothing reads.
@task(
    task_display_name="Traiter les paquets de factures",
    map_index_template="part {{ part }}",
    multiple_outputs=False,
)
@logs_peak_memory
def traiter_paquet(part: int, parts: int, **context: Any) -> dict[str, int]:
    from postier.airflow.fresh_thread import run_on_fresh_thread
    from postier.airflow.runtime import environment, external_id
    from postier.pipeline.runs import process_part

    env, ref = environment(), external_id(context)
    _start(context, env)
    # On a thread of its own: the chunks run at the same Python stack depth whatever started
    # the task process (CPython 3.11's data stack: see postier.airflow.fresh_thread).
    counts = run_on_fresh_thread(
        lambda: process_part(env, ref, part, parts), f"traiter_paquet-{part}"
    )
    return _reported_if_last(context, env, counts, parts)


@task(trigger_rule=TriggerRule.NONE_FAILED, task_display_name="Finaliser (fichier d'impression)")
@logs_peak_memory
def finaliser(**context: Any) -> list[str]:
    from postier.airflow.runtime import environment, external_id
    from postier.pipeline.reports import finalize

    env = environment()
    files = finalize(env, external_id(context))
    # Written again on a retry or a « Clear » (e.g. after `rapport` reported the print file
    # missing): the file is made anew, and so is the report that lists it.
    if _report(context, env, files) and _report_task_untouched(context):
        # A success reported: `rapport` skipped from here, as by the chunk task that ends a run
        # without `finaliser` (`_reported_if_last`). Its XCom pushed first: a skip returns none.
        context["ti"].xcom_push(key="return_value", value=files)
        raise DownstreamTasksSkipped(tasks=[("rapport", -1)])
    return files


#: The mapped chunk task's id.
CHUNK_TASK = "traiter_paquet"
#: How long `rapport` waits for the chunk tasks still running (Airflow's ALL_DONE, which its
#: ONE_FAILED does not wait for), looking at them again every `CHUNKS_RECHECK_S` without
#: holding a worker slot in between (`_wait_for_chunk_tasks`).
CHUNKS_WAIT_S, CHUNKS_RECHECK_S = 600.0, 5.0


@task(
    # Runs as soon as a task it follows failed (or could not run): the success path wrote the
    # report, and the scheduler skips this task without starting a process for it.
    trigger_rule=TriggerRule.ONE_FAILED,
    task_display_name="Rapport d'exécution",
    multiple_outputs=False,
)
@logs_peak_memory
def rapport(**context: Any) -> dict[str, Any]:
    from postier.airflow.runtime import environment, external_id
    from postier.errors import ConfigurationError
    from postier.pipeline.reports import write_report, written_report

    _wait_for_chunk_tasks(context)
    env, ref = environment(), external_id(context)
    undelivered: Exception | None = None
    if _is_send(context):
        # The promise of a send: invoices sent by the chunks that succeeded are definitive, are
        # announced and go to the PA even when another chunk failed (only what is pending: a
        # retry or a « Clear » repeats nothing). A delivery that fails (a PA to configure):
        # the report first, then this task fails with why. Under the run's delivery lock: past
        # its wait for them, a chunk task may still be delivering.
        from postier.pipeline.mailing import deliver_send, delivery_lock

        try:
            with delivery_lock(env, ref):
                deliver_send(env, ref)
        except Exception as error:
            log.exception("Livraison de l'envoi en échec")
            undelivered = error
    # `finaliser` always returns a list when it succeeded: None means it failed or never ran.
    # A DAG without it has no file to make.
    has_file = "finaliser" in context["dag"].task_dict
    files = context["ti"].xcom_pull(task_ids="finaliser") if has_file else []
    # Never a refusal here: « Ne pas envoyer » skips this task with the chunks (the
    # confirmation's direct downstream tasks), and the confirmation reports it. A confirmation
    # without an answer that let the chunks run (marked « success » by hand) is not one either:
    # invoices left unprocessed fail the run.
    summary = _failing(
        context,
        lambda: write_report(env, ref, files or [], finalized=files is not None, again=False),
    )
    if summary is None:
        # Written by the task that failed after writing it (the run failed): its outcome again.
        summary = _failing(context, lambda: written_report(env, ref))
    if isinstance(undelivered, ConfigurationError):
        raise AirflowFailException(str(undelivered)) from None
    if undelivered is not None:
        raise undelivered
    return summary


def _ending_task(context: Any) -> str:
    """The task that ends the run's work when all goes well, hence writes its report."""
    return "finaliser" if "finaliser" in context["dag"].task_dict else CHUNK_TASK


def _is_send(context: Any) -> bool:
    return context["dag"].dag_id in SENDS


def _reported_if_last(
    context: Any, env: Environment, counts: dict[str, int], parts: int
) -> dict[str, int]:
    """A chunk task that ends with nothing of its run left to process, in a DAG where the
    chunks end the run's work, ends it (the first such task only) and, having reported a
    success, skips `rapport`; one that ends with invoices still pending (a chunk failed
    elsewhere) does nothing more."""
    from postier.store.runs import PENDING

    ending = not counts[PENDING] and _ending_task(context) == CHUNK_TASK
    if ending and _end_run(context, env, parts) and _report_task_untouched(context):
        # The run's work done and reported a success: `rapport` has nothing to do. Skipped here, the
        # scheduler ends the run at the loop that sees this task's end, rather than settling
        # `rapport`'s trigger rule at that loop and ending the run at the next (Airflow's
        # `DagRun.update_state` does not look again after a change), half a second later when
        # the first read no executor event. Not once a failure has set it going.
        raise DownstreamTasksSkipped(tasks=[("rapport", -1)])
    return counts


def _report_task_untouched(context: Any) -> bool:
    """Whether `rapport` has no state yet: no task of the run failed, which would have set it
    going (it then runs, finds the report written, and says the run's outcome)."""
    ti, run_id = context["ti"], context["run_id"]
    states = ti.get_task_states(
        dag_id=context["dag"].dag_id, task_ids=["rapport"], run_ids=[run_id]
    ).get(run_id, {})
    return all(state is None for state in states.values())


def _end_run(context: Any, env: Environment, parts: int) -> bool:
    """The end of a run's work, in the task that ends it: a send delivers, then the report is
    written (`write_report`'s `again` false: once).

    A send is ended by ONE task, its deliverer (`end_send`: marked in the run's row under the
    run's delivery lock, by its map index, one of the run's `parts` chunk tasks): the other chunk
    tasks, which also end with nothing pending, end at once, without holding a worker slot, a
    connection or a transaction for the delivery's minutes (the run's note: `run_note` reads it
    from whichever task pushed it). A PA refusing Postier's credentials (`ConfigurationError`,
    French message) fails the deliverer; its retries, or a « Clear » once the PA is fixed,
    deliver again (the mark outlives its XComs), and the report says what was delivered since;
    failed for good, `rapport` delivers and reports. True when this task wrote the report, the
    run a success (not when it found it written: a retry, or another task's)."""
    if _is_send(context):
        from postier.airflow.runtime import external_id
        from postier.pipeline.mailing import end_send

        if not end_send(env, external_id(context), context["ti"].map_index, parts):
            log.info(DELIVERED_ELSEWHERE)
            return False
    return _report(context, env, again=False)


def _report(
    context: Any,
    env: Environment,
    files: list[str] | None = None,
    *,
    refused: bool = False,
    again: bool = True,
) -> bool:
    """Write the run's report from this task and put its note on the Airflow run (XCom read
    by `run_note`); with `again` false, a report already written is not written again
    (`write_report`'s `again`) but its note is put again (a retry of the task that wrote it
    starts without its XComs). A report that says the run failed fails this task at once: a
    retry would process nothing. True when this task wrote it, saying the run succeeded."""
    from postier.airflow.runtime import external_id
    from postier.pipeline.reports import RunFailedError, write_report, written_report

    ref = external_id(context)
    summary = _failing(
        context,
        lambda: write_report(env, ref, files or [], refused=refused, again=again),
    )
    if summary is None:
        try:
            written = written_report(env, ref)
        except RunFailedError as error:
            written = error.summary
        context["ti"].xcom_push(key=NOTE_KEY, value=written["note"])
    return summary is not None


def _failing(context: Any, report: Callable[[], _R]) -> _R:
    """`report()`, its note put on the Airflow run; a `RunFailedError` fails the task at once
    (after putting the note of the report it carries)."""
    from postier.pipeline.reports import RunFailedError

    try:
        summary = report()
    except RunFailedError as error:
        context["ti"].xcom_push(key=NOTE_KEY, value=error.summary["note"])
        raise AirflowFailException(str(error)) from None
    if summary is not None:
        context["ti"].xcom_push(key=NOTE_KEY, value=summary["note"])
    return summary


def _wait_for_chunk_tasks(context: Any) -> None:
    """Return once the run's chunk tasks are over for good (a chunk task that failed for good
    triggers `rapport` while the others may still be at work or to be retried), or once
    `rapport` has waited `CHUNKS_WAIT_S` for them: past it the report says what is done.

    Not waiting in a worker slot: while they are at work, `rapport` asks Airflow to run it again
    in `CHUNKS_RECHECK_S` (up for reschedule, as a sensor in reschedule mode), and the slot goes
    to the chunk tasks' work and retries meanwhile."""
    from airflow.sdk import TaskInstanceState as S
    from airflow.sdk.exceptions import AirflowRescheduleException

    # Over for good, no retry to come: Airflow core's `State.finished`, spelled with what the
    # Task SDK exposes (a worker with only the SDK has no `airflow.utils`).
    finished = {S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED}
    ti, run_id = context["ti"], context["run_id"]
    states = ti.get_task_states(
        dag_id=context["dag"].dag_id, task_ids=[CHUNK_TASK], run_ids=[run_id]
    ).get(run_id, {})
    if all(state in finished for state in states.values()):
        return
    now = datetime.now(UTC)
    waiting_since = ti.get_first_reschedule_date(context) or now
    if (now - waiting_since).total_seconds() >= CHUNKS_WAIT_S:
        log.warning("Tâches de paquets encore en cours après %.0f s : rapport écrit", CHUNKS_WAIT_S)
        return
    raise AirflowRescheduleException(now + timedelta(seconds=CHUNKS_RECHECK_S))


def build_dag(treatment_id: str | TreatmentId, doc_md: str | None = None) -> DAG:
    t = treatment(treatment_id)
    with DAG(
        dag_id=t.id.value,
        dag_display_name=t.label,
        description=t.description,
        doc_md=doc_md or t.description,
        schedule=NIGHTLY if t.scheduled else None,
        start_date=datetime(2026, 1, 1, tzinfo=PARIS),
        catchup=False,
        is_paused_upon_creation=t.scheduled or None,
        params={} if t.scheduled else trigger_params(t),
        default_args=env_settings.task_defaults(),
        max_active_runs=1 if t.transition else 4,
        tags=["postier", "factures"] + (["planifié"] if t.scheduled else ["manuel"]),
    ) as dag:
        # One chunk task per worker slot, none upstream: the first to start selects.
        parts = chunk_task_count()
        chunks = traiter_paquet.partial(parts=parts).expand(part=list(range(parts)))
        # The task that selects when it is not a chunk task: `rapport` follows it too.
        head: list[Any] = []
        if t.needs_confirmation:
            confirmation = SendConfirmation(
                task_id="confirmation",
                task_display_name="Confirmer l'envoi définitif",
                subject="Envoi définitif des factures",
                defaults=SendConfirmation.REJECT,
                response_timeout=env_settings.confirmation_timeout(),
            )
            confirmation >> chunks
            head = [confirmation]
        # After the chunks, only the step this treatment has.
        last: Any = chunks
        if t.id in FINALIZED:
            last = last >> finaliser()
        # After the confirmation too: a refused selection is reported (a send's pending
        # deliveries delivered) by `rapport`.
        [*head, last] >> rapport()
    return dag
