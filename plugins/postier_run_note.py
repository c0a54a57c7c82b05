"""Airflow plugin: each treatment run gets its outcome as its note (postier.airflow.run_note)."""

from airflow.plugins_manager import AirflowPlugin

from postier.airflow import run_note


class PostierRunNotePlugin(AirflowPlugin):
    name = "postier_note_execution"
    listeners = [run_note]
