"""The Airflow bench splits a run's idle cores into the phases at its edges (before the first
chunk works, the selection, the chunks, after the last chunk), from the task logs' lines and the
machine's busy CPU sampled meanwhile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench_timings import T0, at

from postier.airflow.dag_factory import SELECTION_LOG
from postier.pipeline.runs import CHUNK_LOG

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from airflow_bench import (  # noqa: E402
    CHUNK_AT,
    CORES,
    MACHINE_BUSY,
    PREPARE,
    SELECTION_AT,
    SEND,
    RunTiming,
    edge_phases,
    idle_by_phase,
    idle_core_s,
)

t0 = T0.timestamp()


def _json_line(seconds: float, event: str) -> str:
    # As the task logs write them: one compact JSON object a line, its time first.
    line = {"timestamp": at(seconds), "level": "info", "event": event}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def test_the_selection_and_chunk_lines_are_read_with_their_time() -> None:
    chunk = CHUNK_LOG % (3, 220, 2.5, 1.875, 440, 1000, 2.2, 0.3, 0.1, 0.05, 0.04, 0.11)
    logs = "\n".join([_json_line(1.0, SELECTION_LOG % 0.456), _json_line(4.0, chunk)])

    assert SELECTION_AT.findall(logs) == [(at(1.0), "0.46")]
    assert CHUNK_AT.findall(logs) == [(at(4.0), "2.50")]


def test_a_prepares_phases_follow_its_selection_and_its_two_tasks_chunks() -> None:
    prepare = RunTiming(PREPARE, "p", 10.0, posted=t0, ended=t0 + 10.0)
    prepare.selection_span = (t0 + 0.5, t0 + 1.0)
    prepare.chunk_spans = {
        "map_index=0/attempt=1.log": [(t0 + 1.1, t0 + 5.0), (t0 + 5.0, t0 + 9.0)],
        "map_index=1/attempt=1.log": [(t0 + 1.2, t0 + 8.5)],
    }

    phases = edge_phases(prepare)

    assert phases == {
        "trigger": (t0, t0 + 0.5),
        "selection": (t0 + 0.5, t0 + 1.0),
        "to_chunks": (t0 + 1.0, t0 + 1.1),
        "chunks": (t0 + 1.1, t0 + 8.5),
        "tail": (t0 + 8.5, t0 + 9.0),
        "end": (t0 + 9.0, t0 + 10.0),
    }


def test_a_sends_phases_leave_the_clerks_time_out() -> None:
    send = RunTiming(SEND, "s", 10.0, posted=t0, ended=t0 + 70.0)
    send.selection_span = (t0 + 0.4, t0 + 0.8)
    send.asked, send.answered = t0 + 1.0, t0 + 60.0
    send.chunk_spans = {
        "map_index=0/attempt=1.log": [(t0 + 61.0, t0 + 69.0)],
        "map_index=1/attempt=1.log": [(t0 + 61.2, t0 + 68.0)],
    }

    phases = edge_phases(send)

    assert phases["question"] == (t0 + 0.8, t0 + 1.0)
    assert phases["to_chunks"] == (t0 + 60.0, t0 + 61.0)
    assert sum(end - start for start, end in phases.values()) == pytest.approx(70.0 - 59.0)


def test_idle_cores_are_the_span_less_the_machines_busy_cpu() -> None:
    # Busy on every core for the first second, then on one only.
    samples = [
        (t0, {MACHINE_BUSY: 100.0}),
        (t0 + 1.0, {MACHINE_BUSY: 100.0 + CORES}),
        (t0 + 3.0, {MACHINE_BUSY: 102.0 + CORES}),
    ]

    assert idle_core_s(samples, t0, t0 + 1.0) == pytest.approx(0.0)
    assert idle_core_s(samples, t0 + 1.0, t0 + 3.0) == pytest.approx(2 * (CORES - 1))
    assert idle_core_s(samples, t0 + 2.0, t0 + 2.0) == 0.0


def test_every_idle_core_second_of_a_run_falls_in_one_phase() -> None:
    prepare = RunTiming(PREPARE, "p", 10.0, posted=t0, ended=t0 + 10.0)
    prepare.selection_span = (t0 + 0.5, t0 + 1.0)
    prepare.chunk_spans = {"map_index=0/attempt=1.log": [(t0 + 1.1, t0 + 9.0)]}
    samples = [(t0 + k * 0.5, {MACHINE_BUSY: 0.3 * k * k}) for k in range(21)]

    phases = idle_by_phase(prepare, samples)

    assert sum(idle for _s, idle in phases.values()) == pytest.approx(
        idle_core_s(samples, t0, t0 + 10.0)
    )
    # One chunk task at work: no uneven end.
    assert phases["tail"] == (0.0, 0.0)
