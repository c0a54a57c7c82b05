"""End-to-end tests on a real Airflow (a package, so that its conftest is not `conftest`)."""
