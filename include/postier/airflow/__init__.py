"""The only Airflow-aware part of the package (with `dags/`): forms, runtime, DAG factory."""
