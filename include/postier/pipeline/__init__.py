"""Use cases of the treatments: start (validate, select, chunk) → process chunk → finalize → report.

No Airflow import here: the DAGs call these functions, and so do the tests and the command line.
"""
