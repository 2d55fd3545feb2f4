#!/usr/bin/env bash
# Run the test suite against the local PostgreSQL and RabbitMQ (started if stopped):
#   bash scripts/test.sh                  the default run (everything but the slow tests)
#   bash scripts/test.sh -m slow          the long soak, load and fault runs
#   bash scripts/test.sh services/intake -q   any pytest arguments
# Each test makes its own vhost and database and removes them afterwards.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

setup_all
cd "$ROOT"

# the default run leaves the slow tests out (pyproject's addopts); `-m slow` selects them
rc=0
uv run --frozen pytest "$@" || rc=$?
if ((rc == 5)); then
    printf 'error: pytest collected no tests (exit code 5); check the paths and the -m/-k expression\n' >&2
    exit 1
fi
exit "$rc"
