#!/usr/bin/env bash
# Set up and run the whole system on this machine, in the foreground:
#   bash scripts/run.sh                    the four services
#   bash scripts/run.sh --with-simulator   and the department simulator, which answers the
#                                          reviews so orders go all the way to a contract
#   bash scripts/run.sh --with-simulator -- OPTIONS   options for the simulator
# Ctrl-C stops everything; each service finishes the messages it is handling first.
#
# Needs: Debian with PostgreSQL and RabbitMQ installed (they are started if stopped), and
# Python 3.11 with pip (uv is installed with pip if missing). Any *_DATABASE_URL,
# *_AMQP_URL or other setting already in the environment is kept. Each service and each
# department connects to RabbitMQ as its own user; passwords go to .local/bus.env, and
# each department's AMQP URL to .local/departments.env, for trying a department system.
#
# A second instance beside the usual one (the README walk's test runs one):
#   ORDERFLOW_DATABASE, ORDERFLOW_VHOST   database and vhost (default orderflow)
#   ORDERFLOW_LOCAL_DIR                   where the passwords go (default .local)
#   ORDERFLOW_BUS_USER_PREFIX             before every bus user's name (users are global)
#   INTAKE_HTTP_PORT ... NOTIFIER_HTTP_PORT   the ports (default 8000 to 8003)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

with_simulator=0
simulator_args=()
while (($#)); do
    case "$1" in
    --with-simulator) with_simulator=1 ;;
    --)
        shift
        simulator_args=("$@")
        break
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

DATABASE="${ORDERFLOW_DATABASE:-orderflow}"
VHOST="${ORDERFLOW_VHOST:-orderflow}"
LOCAL="${ORDERFLOW_LOCAL_DIR:-$ROOT/.local}"
PREFIX="${ORDERFLOW_BUS_USER_PREFIX:-}"
[[ "$PREFIX" =~ ^[A-Za-z0-9._-]*$ ]] || die "ORDERFLOW_BUS_USER_PREFIX: letters, digits, . _ - only"

setup_all
ensure_database "$DATABASE"
ensure_vhost "$VHOST"

database_url="postgresql://$PG_ADMIN_USER@$PG_HOST:$PG_PORT/$DATABASE"

# The bus: the topology, and a RabbitMQ user per service, per department (the default
# policy's general manager too) and for an example order-submitting system, each allowed
# only its own part (orderflow-bus, as the broker's administrator). Passwords are
# generated once and kept in a private file.
CREDENTIALS="${ORDERFLOW_BUS_CREDENTIALS:-$LOCAL/bus.env}"
SUBMITTER="${ORDERFLOW_EXAMPLE_SUBMITTER:-${PREFIX}example-submitter}"
DEPARTMENTS=(supervisor production service_delivery finance technical general_manager)
# with a prefix, the services' users and the departments' are named after it
service_users="{\"intake\": \"${PREFIX}intake\", \"review-router\": \"${PREFIX}review-router\", \"contracts\": \"${PREFIX}contracts\", \"notifier\": \"${PREFIX}notifier\"}"
department_pattern="${PREFIX}dept-{department}"
say "provisioning the bus (vhost $VHOST): users and permissions"
ORDERFLOW_BUS_USERS="${ORDERFLOW_BUS_USERS:-$service_users}" "$ROOT/.venv/bin/orderflow-bus" \
    --api "http://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_API_PORT" \
    --vhost "$VHOST" --credentials "$CREDENTIALS" --rotate-unknown \
    provision --department general_manager --submitter "$SUBMITTER" \
    --department-user-pattern "$department_pattern" ||
    die "could not provision the bus"
# shellcheck disable=SC1090  # written by orderflow-bus just now
source "$CREDENTIALS"

# People: local accounts for a try-out (an administrator, the example orders' salespeople,
# a sales manager, a reviewer per department, ops), passwords generated on the first run and
# kept in a file only its owner reads.
SIGN_IN="${ORDERFLOW_SIGN_IN_FILE:-$LOCAL/sign-in.txt}"
"$ROOT/.venv/bin/orderflow-admin" --database-url "$database_url" bootstrap-local --file "$SIGN_IN" ||
    die "could not create the local accounts"

# the password of a bus user from the credentials file: bus_password review-router
bus_password() {
    local name="ORDERFLOW_BUS_PASSWORD_${1//[^A-Za-z0-9]/_}"
    name="${name^^}"
    [[ -n "${!name:-}" ]] || die "no password for bus user $1 in $CREDENTIALS (remove the file to start afresh)"
    printf '%s' "${!name}"
}
# the URL of a role's user (a service's name, dept-finance) with its password
bus_url() {
    local password
    password="$(bus_password "$PREFIX$1")" || exit 1
    printf 'amqp://%s:%s@127.0.0.1:5672/%s' "$PREFIX$1" "$password" "$VHOST"
}

# Each department's URL, as a department system connects (docs/integration.md): written
# afresh on every run, so it always holds the passwords in force.
DEPARTMENT_URLS="$LOCAL/departments.env"
write_department_urls() {
    local department url lines="# each department's RabbitMQ user, for a department system: source this file"$'\n'
    for department in "${DEPARTMENTS[@]}"; do
        url="$(bus_url "dept-$department")" || return 1
        lines+="ORDERFLOW_DEPARTMENT_URL_${department^^}=$url"$'\n'
    done
    (umask 077 && printf '%s' "$lines" >"$DEPARTMENT_URLS.tmp") && mv "$DEPARTMENT_URLS.tmp" "$DEPARTMENT_URLS"
}
write_department_urls || die "could not write $DEPARTMENT_URLS"

# One database, a schema per service; one vhost, a user per service. Settings already set
# are kept.
if [[ "${ORDERFLOW_ALLOW_GUEST:-false}" == true ]]; then
    warn "ORDERFLOW_ALLOW_GUEST=true: the services connect as $RABBIT_USER, which may do anything on the broker"
    # every event then comes from that one user
    export ORDERFLOW_BUS_USERS="${ORDERFLOW_BUS_USERS:-{\"intake\": \"$RABBIT_USER\", \"review-router\": \"$RABBIT_USER\", \"contracts\": \"$RABBIT_USER\", \"notifier\": \"$RABBIT_USER\"\}}"
elif [[ -n "$PREFIX" ]]; then
    export ORDERFLOW_BUS_USERS="${ORDERFLOW_BUS_USERS:-$service_users}"
fi
if [[ -n "$PREFIX" ]]; then
    export REVIEW_ROUTER_VERDICT_USER_PATTERN="${REVIEW_ROUTER_VERDICT_USER_PATTERN:-$department_pattern}"
fi
for service in intake review-router contracts notifier; do
    prefix="${service//-/_}"
    prefix="${prefix^^}"
    db_var="${prefix}_DATABASE_URL" amqp_var="${prefix}_AMQP_URL" json_var="${prefix}_LOG_JSON"
    if [[ "${ORDERFLOW_ALLOW_GUEST:-false}" == true ]]; then
        service_url="amqp://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:5672/$VHOST"
    else
        service_url="$(bus_url "$service")"
    fi
    export "$db_var=${!db_var:-$database_url}"
    export "$amqp_var=${!amqp_var:-$service_url}"
    # people read these logs; deployments keep the JSON default
    export "$json_var=${!json_var:-false}"
done
# the example submitter may send order.submit (docs/integration.md)
export INTAKE_SUBMITTER_USERS="${INTAKE_SUBMITTER_USERS:-$SUBMITTER}"
export INTAKE_HTTP_PORT="${INTAKE_HTTP_PORT:-8000}"
export REVIEW_ROUTER_HTTP_PORT="${REVIEW_ROUTER_HTTP_PORT:-8001}"
export CONTRACTS_HTTP_PORT="${CONTRACTS_HTTP_PORT:-8002}"
export NOTIFIER_HTTP_PORT="${NOTIFIER_HTTP_PORT:-8003}"
# a local run may send webhooks and mail to receivers on this machine; a deployment lists
# only the internal hosts it means (public addresses need no entry)
export NOTIFIER_OUTBOUND_ALLOW="${NOTIFIER_OUTBOUND_ALLOW:-127.0.0.1}"
# EXAMPLE ONLY, for a local run: a real deployment sets the company's own legal name, which
# is printed on every contract as the seller.
export CONTRACTS_SELLER_NAME="${CONTRACTS_SELLER_NAME:-Example Seller Co., Ltd. (example for local use only)}"

# Seconds a process gets to stop after SIGTERM: the services' own graceful timeout (20 s
# for in-flight messages) plus the outbox relay's last flush and closing the connections.
STOP_GRACE="${ORDERFLOW_STOP_GRACE:-60}"

names=()
commands=()
while IFS= read -r line; do
    if [[ "$line" =~ ^([A-Za-z0-9_-]+):[[:space:]]*(.+)$ ]]; then
        names+=("${BASH_REMATCH[1]}")
        commands+=("${BASH_REMATCH[2]}")
    fi
done <"$ROOT/Procfile"
if ((with_simulator)); then
    [[ -f "$ROOT/bench/department_simulator.py" ]] || die "bench/department_simulator.py is missing"
    # each department answers as its own user, dept-<department>, as real department
    # systems do; the URLs (with passwords) stay in the environment, off the command line
    simulator='python bench/department_simulator.py'
    for department in supervisor production service_delivery finance technical; do
        var="ORDERFLOW_SIMULATOR_URL_${department^^}"
        url="$(bus_url "dept-$department")" || exit 1
        export "$var=$url"
        # shellcheck disable=SC2016  # expanded by the simulator's own shell
        simulator+=" --department-url \"$department=\$$var\""
    done
    if ((${#simulator_args[@]})); then
        simulator+=" $(printf '%q ' "${simulator_args[@]}")"
    fi
    names+=(simulator)
    commands+=("$simulator")
fi

# the services' console scripts and python come from the project's environment
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT"

pids=()
stopping=0

start() {
    local name=$1 command=$2
    # Each process gets its own session, so Ctrl-C reaches only this script, which then
    # sends one SIGTERM to each (a second SIGINT would make uvicorn skip its graceful
    # shutdown). The prefixer ignores signals so that it outlives its process's last line.
    setsid bash -c "exec $command" \
        > >(trap '' INT TERM && exec sed -u "s/^/$(printf '%-14s' "$name")| /") 2>&1 &
    pids+=($!)
    say "started $name (pid $!): $command"
}

alive() {
    local pid
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

stop_all() {
    local force=0 pid
    trap 'force=1' INT TERM
    say "stopping (each service finishes its in-flight messages; Ctrl-C again to kill now)"
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + STOP_GRACE))
    while alive; do
        if ((force || SECONDS >= deadline)); then
            warn "killing what is still running"
            for pid in "${pids[@]}"; do
                kill -KILL "$pid" 2>/dev/null || true
            done
            break
        fi
        sleep 0.2
    done
    wait "${pids[@]}" 2>/dev/null || true
    say "stopped"
}

trap 'stopping=1' INT TERM
for i in "${!names[@]}"; do
    start "${names[$i]}" "${commands[$i]}"
done
say "intake http://127.0.0.1:$INTAKE_HTTP_PORT, review-router :$REVIEW_ROUTER_HTTP_PORT, contracts :$CONTRACTS_HTTP_PORT, notifier :$NOTIFIER_HTTP_PORT (Ctrl-C stops)"
say "bus users (vhost $VHOST): services ${PREFIX}intake, ${PREFIX}review-router, ${PREFIX}contracts, ${PREFIX}notifier; departments ${PREFIX}dept-<department>; submitter $SUBMITTER; passwords in $CREDENTIALS (mode 600)"
if ((with_simulator)); then
    say "the simulator answers the reviews (${simulator_args[*]:-every department approves})"
else
    say "no simulator: the reviews wait in review.<department> for a department system; each department's AMQP URL is in $DEPARTMENT_URLS (README, \"Try it\")"
fi
say "sign in (usernames and passwords in $SIGN_IN): curl -s -X POST http://127.0.0.1:$INTAKE_HTTP_PORT/auth/login -H 'content-type: application/json' -d '{\"username\": \"zhang.wei\", \"password\": \"...\"}'"

status=0
while ((!stopping)); do
    exited=""
    rc=0
    wait -n -p exited "${pids[@]}" || rc=$?
    if ((stopping)); then
        break
    fi
    if [[ -n "$exited" ]]; then
        for i in "${!pids[@]}"; do
            if [[ "${pids[$i]}" == "$exited" ]]; then
                warn "${names[$i]} exited with status $rc; stopping the others"
            fi
        done
        status=$((rc == 0 ? 1 : rc))
        break
    fi
done
stop_all
exit "$status"
