# shellcheck shell=bash disable=SC2034  # the settings here are used by the scripts that source it
# Set-up shared by run.sh, test.sh and CI, for a Debian machine where PostgreSQL and
# RabbitMQ are installed locally (running or not): uv, the Python environment, both servers
# running, RabbitMQ's management plugin (ops and the tests use its HTTP API).
# Every step is idempotent: a second run finds everything in place and changes nothing.

# -P: the real folder, also when the script is reached through a symbolic link
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# The local servers, as installed on such a machine (trust authentication on 127.0.0.1).
PG_HOST=127.0.0.1
PG_PORT=5432
PG_ADMIN_USER=postgres
RABBIT_USER=guest
RABBIT_PASSWORD=guest
RABBIT_API_PORT=15672
# the uv that wrote uv.lock (deploy/Dockerfile pins the same), installed when uv is missing
UV_VERSION=0.13.9

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Wait for a command to succeed: wait_for SECONDS WHAT COMMAND...
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "$what did not come up within ${seconds}s"
        fi
        sleep 1
    done
}

port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

ensure_uv() {
    if command -v uv >/dev/null 2>&1; then
        return
    fi
    say "installing uv $UV_VERSION from PyPI (pip install)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "uv==$UV_VERSION" ||
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --user --break-system-packages "uv==$UV_VERSION" ||
        die "could not install uv with pip"
    # pip puts the binary in its interpreter's scripts folder (or the user's), which may not
    # be on PATH yet (pyenv shims, ~/.local/bin)
    local dir
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
        "$(python3 -m site --user-base)/bin"; do
        if [[ -x "$dir/uv" ]]; then
            PATH="$dir:$PATH"
            export PATH
            break
        fi
    done
    hash -r
    command -v uv >/dev/null 2>&1 || die "uv was installed but is not on PATH"
}

sync_python() {
    say "installing the Python environment (uv sync --frozen)"
    # the interpreter comes from the machine: never download one
    (cd "$ROOT" && UV_PYTHON_DOWNLOADS=never uv sync --frozen --quiet) ||
        die "uv sync --frozen failed (is uv.lock up to date with pyproject.toml?)"
}

postgres_ready() {
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

ensure_postgres() {
    command -v pg_isready >/dev/null 2>&1 || die "PostgreSQL's client tools are not installed"
    if postgres_ready; then
        return
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 || die "PostgreSQL is not running and pg_ctlcluster is missing"
    local versions=(/etc/postgresql/*/)
    [[ -d "${versions[0]}" ]] || die "no PostgreSQL cluster under /etc/postgresql"
    local version="${versions[-1]%/}"
    version="${version##*/}"
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for 60 "PostgreSQL" postgres_ready
}

rabbitmq_running() {
    rabbitmq-diagnostics -q ping
}

ensure_rabbitmq() {
    command -v rabbitmqctl >/dev/null 2>&1 || die "RabbitMQ is not installed (rabbitmqctl missing)"
    if ! rabbitmq_running >/dev/null 2>&1; then
        say "starting RabbitMQ"
        rabbitmq-server -detached || true
    fi
    # the node needs a moment before it answers at all, then a while to boot its apps
    wait_for 120 "RabbitMQ" rabbitmqctl -q await_startup --timeout 60
    if ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
        say "enabling RabbitMQ's management plugin"
        rabbitmq-plugins -q enable rabbitmq_management >/dev/null
    fi
    wait_for 60 "RabbitMQ's management API" port_open 127.0.0.1 "$RABBIT_API_PORT"
    wait_for 30 "RabbitMQ's AMQP port" port_open 127.0.0.1 5672
}

psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ADMIN_USER" -d postgres "$@"
}

ensure_database() {
    local name=$1
    if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]]; then
        say "creating database $name"
        psql_admin -c "CREATE DATABASE \"$name\""
    fi
}

ensure_vhost() {
    local vhost=$1
    if ! rabbitmqctl -q list_vhosts name | grep -qx -- "$vhost"; then
        say "creating RabbitMQ vhost $vhost"
        rabbitmqctl -q add_vhost "$vhost"
    fi
    rabbitmqctl -q set_permissions -p "$vhost" "$RABBIT_USER" '.*' '.*' '.*' >/dev/null
}

# uv, the environment, both servers, the management plugin and the Node.js example's packages.
# Debian packages the services need: CJK fonts for the Chinese contracts (the contracts
# service refuses to start without them), poppler-utils for the tests that read PDFs back,
# curl and jq for the README's walk (and its test).
SYSTEM_PACKAGES=(fonts-noto-cjk poppler-utils curl jq)

ensure_system_packages() {
    local missing=() package
    for package in "${SYSTEM_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 || die "install ${missing[*]} (Debian package names)"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { timeout 900 apt-get update -qq &&
        timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null ||
        die "could not install ${missing[*]}"
}

# The Node.js department example (examples/department-node) and its test: its packages,
# exactly as its package-lock.json pins them, from the npm registry (`npm ci`). Done again
# only when the lock file changed since the last install.
NODE_EXAMPLE="$ROOT/examples/department-node"

install_node_example() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "install Node.js (20 or later) and npm"
        say "installing Node.js and npm"
        export DEBIAN_FRONTEND=noninteractive
        { timeout 900 apt-get update -qq &&
            timeout 900 apt-get install -y -qq --no-install-recommends nodejs npm; } >/dev/null ||
            die "could not install nodejs and npm"
    fi
    local stamp="$NODE_EXAMPLE/node_modules/.orderflow-lock.sha256" sum
    sum="$(sha256sum "$NODE_EXAMPLE/package-lock.json")"
    sum="${sum%% *}"
    if [[ -f "$stamp" && "$(<"$stamp")" == "$sum" ]]; then
        return
    fi
    say "installing the Node.js department example's packages (npm ci)"
    (cd "$NODE_EXAMPLE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
        die "npm ci failed in examples/department-node"
    printf '%s\n' "$sum" >"$stamp"
}

setup_all() {
    ensure_system_packages
    ensure_uv
    sync_python
    ensure_postgres
    ensure_rabbitmq
    install_node_example
}
