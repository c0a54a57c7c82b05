#!/bin/sh
# First start of the postgres container only: the Postier database and its two roles.
# postier_owner owns the tables (migrations run as it); postier_app is what the tasks connect as:
# rows only, no TRUNCATE, no DDL, neither owner nor superuser. `postier db migrate` grants it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_pw="$POSTIER_OWNER_PASSWORD" -v app_pw="$POSTIER_APP_PASSWORD" <<'SQL'
CREATE ROLE postier_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
CREATE ROLE postier_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE DATABASE postier OWNER postier_owner;
REVOKE CONNECT ON DATABASE airflow FROM PUBLIC;
SQL
