#!/bin/sh
# Runs once, when the postgres container starts with an empty data directory: the
# `orderflow` database and one login role per service. Each service creates its own
# schema at start (it owns it and nobody else can write to it) and applies its migrations.
# The passwords come from the container's environment (see docker-compose.yml).
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v intake_password="$INTAKE_DB_PASSWORD" \
    -v review_router_password="$REVIEW_ROUTER_DB_PASSWORD" \
    -v contracts_password="$CONTRACTS_DB_PASSWORD" \
    -v notifier_password="$NOTIFIER_DB_PASSWORD" <<'SQL'
CREATE ROLE intake LOGIN PASSWORD :'intake_password';
CREATE ROLE review_router LOGIN PASSWORD :'review_router_password';
CREATE ROLE contracts LOGIN PASSWORD :'contracts_password';
CREATE ROLE notifier LOGIN PASSWORD :'notifier_password';
-- the identity store (schema auth) is shared: every service reads and updates it
CREATE ROLE orderflow_services NOLOGIN;
GRANT orderflow_services TO intake, review_router, contracts, notifier;

CREATE DATABASE orderflow;
REVOKE ALL ON DATABASE orderflow FROM PUBLIC;
-- CREATE lets each service create its own schema; the others' schemas stay closed to it
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE orderflow TO intake, review_router, contracts, notifier;
SQL
