"""PostgreSQL access (psycopg 3): local cluster, migrations, selection, transitions, loaders."""
