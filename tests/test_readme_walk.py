"""The README's "Try it" walk, run exactly as written.

Every `sh` block of the section carries a marker, `<!-- walk: NAME -->` (or
`<!-- walk: NAME (background) -->` for a block that runs until stopped, such as
`scripts/run.sh`); a block without one fails the test, so the README cannot show a step
nobody runs. The blocks run with bash in a folder of their own that looks like the
project's (`docs`, `examples`, `scripts` and `.venv` are the project's own, `.local` is
the test's), one after the other, each seeing the variables the ones before it set, as in
one terminal.

The system is started the README's way, by `scripts/run.sh`, on this test's own vhost and
database, with its own bus users (a prefix: users are global in RabbitMQ) and its own
`.local`, through run.sh's settings for a second instance. The only change made to the
blocks' text is the HTTP ports, 8000 to 8003 becoming free ones, so the walk never talks
to a developer's instance.

It takes a minute or more (run.sh checks the machine's set-up first), so it is in the slow
run, and `.ci/run` runs it by itself: `bash scripts/test.sh -m slow tests/test_readme_walk.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import pytest

from orderflow_testkit.testing import Infra, Servers, admin_broker, free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Try it"
MARKER = re.compile(r"<!-- walk: ([a-z-]+)( \(background\))? -->\n```sh\n(.*?)\n```", re.S)
PORTS = {8000: "intake", 8001: "review-router", 8002: "contracts", 8003: "notifier"}
#: environment variables of a developer's own set-up that must not reach the test's instance
FOREIGN = ("INTAKE_", "REVIEW_ROUTER_", "CONTRACTS_", "NOTIFIER_", "ORDERFLOW_")
ANSI = "\x1b["


@dataclass(frozen=True)
class Block:
    name: str
    background: bool
    script: str


def walk_blocks(text: str) -> list[Block]:
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else len(text)]
    blocks = [Block(m[1], bool(m[2]), m[3]) for m in MARKER.finditer(section)]
    unmarked = section.count("```sh") - len(blocks)
    assert unmarked == 0, f"{unmarked} sh block(s) in {SECTION!r} without a walk marker"
    # the test moves the services to ports of its own: every address must be one it knows
    for block in blocks:
        addresses = set(re.findall(r"[\w.-]+:800\d", block.script))
        assert addresses <= {f"127.0.0.1:{p}" for p in PORTS}, (block.name, addresses)
    return blocks


def test_every_block_of_the_walk_is_marked() -> None:
    blocks = walk_blocks(README.read_text())
    names = [b.name for b in blocks]
    assert len(set(names)) == len(names), names
    assert [b.name for b in blocks if b.background] == ["services", "finance"]
    assert set(CHECKS) == {b.name for b in blocks if not b.background}


# --- running the blocks -----------------------------------------------------------------

#: after each block: the variables and functions it left, for the next block
SAVE_STATE = r"""
__status=$?
for __name in $(compgen -v); do
    case "$__name" in
    __* | BASH* | PIPESTATUS | FUNCNAME | GROUPS | _ ) continue ;;
    esac
    grep -qxF -- "$__name" "$__WALK/baseline" || declare -p "$__name"
done >"$__WALK/state"
declare -f >>"$__WALK/state"
exit "$__status"
"""


class Walk:
    def __init__(self, folder: Path, env: dict[str, str], ports: dict[int, int]) -> None:
        self.folder = folder
        self.env = env
        self.ports = ports
        self.meta = folder / ".walk"
        self.meta.mkdir()
        baseline = subprocess.run(
            ["bash", "-c", "compgen -v"], env=env, capture_output=True, text=True, check=True
        )
        (self.meta / "baseline").write_text(baseline.stdout)
        (self.meta / "state").write_text("")

    def text(self, block: Block) -> str:
        script = block.script
        for port, ours in self.ports.items():
            script = script.replace(f"127.0.0.1:{port}", f"127.0.0.1:{ours}")
        return script

    def run(self, block: Block, *, timeout: float) -> str:
        script = 'source "$__WALK/state"\nset -eo pipefail\n' + self.text(block) + SAVE_STATE
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.folder,
                env={**self.env, "__WALK": str(self.meta)},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"step {block.name!r} did not finish in {timeout:.0f}s; output so far:\n"
                f"{_text(exc.stdout)}\n{_text(exc.stderr)}"
            ) from None
        assert done.returncode == 0, (
            f"step {block.name!r} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def start(self, block: Block, log: IO[bytes]) -> subprocess.Popen[bytes]:
        # a session of its own: stopping it is one signal to its group, as Ctrl-C would be
        return subprocess.Popen(
            ["bash", "-c", self.text(block)],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def stop(process: subprocess.Popen[bytes], *, grace: float) -> int:
    """Ctrl-C in its terminal (SIGINT to its process group), then wait."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            return -9
    return process.returncode


def tail(log: Path, lines: int = 80) -> str:
    return f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(what: str, check: Callable[[], bool], *, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{tail(log)}") from None
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f}s\n{tail(log)}")


def ready(ports: dict[int, int], process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"run.sh exited with {process.returncode}"
    try:
        return all(
            httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
            for port in ports.values()
        )
    except httpx.HTTPError:
        return False


# --- what each step must show -----------------------------------------------------------


def _json_lines(output: str) -> list[Any]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


#: each step's expected outcome, judged from its output (what the reader sees)
CHECKS: dict[str, Callable[[str], None]] = {}


def step(name: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def register(check: Callable[[str], None]) -> Callable[[str], None]:
        CHECKS[name] = check
        return check

    return register


@step("sign-in")
def _signed_in(output: str) -> None:
    (me,) = _json_lines(output)
    assert me["id"] == "zhang.wei", me
    assert "salesperson" in json.dumps(me), me


@step("draft")
def _draft(output: str) -> None:
    uuid.UUID(output.strip())  # the id, not a problem


@step("spec")
def _spec(output: str) -> None:
    assert _json_lines(output) == [
        {"revision": 1, "kind": "requirements_spec", "name": "requirements-spec.txt"}
    ]


@step("submit")
def _submitted(output: str) -> None:
    assert _json_lines(output) == [{"status": "submitted", "errors": None}]


@step("changes-requested")
def _changes_requested(output: str) -> None:
    annotations = _json_lines(output)
    fields = [a["field"] for a in annotations]
    assert fields == ["/payment/settlement_days"], annotations


@step("revise")
def _revised(output: str) -> None:
    (order,) = _json_lines(output)
    assert order["current_revision"] == 2, order
    assert order["errors"] is None, order


@step("resubmit")
def _resubmitted(output: str) -> None:
    files, order = _json_lines(output)
    assert files == {"revision": 2, "kinds": ["requirements_spec"]}
    assert order == {"status": "submitted", "submitted_revision": 2, "errors": None}


@step("contract")
def _contract(output: str) -> None:
    *rounds, contract = _json_lines(output)
    assert sorted((r["revision"], r["status"]) for r in rounds) == [
        (1, "changes_requested"),
        (2, "approved"),
    ], rounds
    assert re.fullmatch(r"HT-\d{4}-\d{6}", contract["number"]), contract


@step("follow")
def _follow(output: str) -> None:
    lines = output.splitlines()
    types = [line.split(" ")[1] for line in lines if re.match(r"\d{4}-\d\d-\d\dT", line)]
    for event in ("order.created", "attachment.added", "order.submitted", "order.revised"):
        assert event in types, f"{event} not in the timeline:\n{output}"
    for event in ("order.changes_requested", "order.approved", "contract.drafted"):
        assert event in types, f"{event} not in the timeline:\n{output}"
    for title in ("Order approved", "Contract ready"):
        assert any(title in line for line in lines), f"{title!r} not in the inbox:\n{output}"


@step("pdf")
def _pdf(output: str) -> None:
    assert output == ""


@step("other-salesperson")
def _not_theirs(output: str) -> None:
    assert output == "404\n"


#: steps that wait for the system (their own loop) get longer
TIMEOUTS = {"changes-requested": 120, "contract": 180}
#: read-only steps whose answer may trail the one before by a moment: run again until true
RETRIED = {"follow": 30.0}


# --- the test ---------------------------------------------------------------------------


def _local_servers(servers: Servers) -> bool:
    """run.sh sets up and uses the machine's own PostgreSQL and RabbitMQ."""
    amqp, database = urlsplit(servers.amqp_url), urlsplit(servers.database_url)
    return (amqp.hostname, amqp.port, database.hostname, database.port) == (
        "127.0.0.1",
        5672,
        "127.0.0.1",
        5432,
    ) and bool(servers.management_api)


@pytest.fixture
def walk_folder(tmp_path: Path) -> Path:
    """A folder that looks like the project's to the walk, with a `.local` of its own."""
    folder = tmp_path / "walk"
    folder.mkdir()
    for name in ("docs", "examples", "scripts", ".venv"):
        (folder / name).symlink_to(ROOT / name)
    (folder / ".local").mkdir(mode=0o700)
    return folder


@pytest.fixture
def bus_prefix(servers: Servers) -> Iterator[str]:
    prefix = f"w{uuid.uuid4().hex[:8]}-"
    yield prefix
    broker = admin_broker(servers)
    broker.delete_users(sorted(u for u in broker.users() if u.startswith(prefix)))


def walk_env(infra: Infra, folder: Path, prefix: str, ports: dict[int, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(
        {
            "ORDERFLOW_DATABASE": infra.database,
            "ORDERFLOW_VHOST": infra.vhost,
            "ORDERFLOW_LOCAL_DIR": str(folder / ".local"),
            "ORDERFLOW_BUS_USER_PREFIX": prefix,
            "ORDERFLOW_STOP_GRACE": "40",
            **{f"{PORTS[p].replace('-', '_').upper()}_HTTP_PORT": str(o) for p, o in ports.items()},
            "TERM": "dumb",
        }
    )
    return env


# a minute and more (run.sh sets the machine up first): in the slow run, which CI runs too
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_readme_walk_works_as_written(
    servers: Servers, infra: Infra, walk_folder: Path, bus_prefix: str, tmp_path: Path
) -> None:
    if not _local_servers(servers):
        pytest.skip("scripts/run.sh runs against this machine's PostgreSQL and RabbitMQ")
    blocks = {b.name: b for b in walk_blocks(README.read_text())}
    ports = {port: free_port() for port in PORTS}
    walk = Walk(walk_folder, walk_env(infra, walk_folder, bus_prefix, ports), ports)
    run_log, finance_log = tmp_path / "run.sh.log", tmp_path / "finance.log"
    started = time.monotonic()
    with run_log.open("wb") as run_out, finance_log.open("wb") as finance_out:
        system = walk.start(blocks["services"], run_out)
        finance = None
        try:
            wait_until(
                "the four services ready",
                lambda: ready(ports, system),
                timeout=240,
                log=run_log,
            )
            print(f"services ready after {time.monotonic() - started:.0f}s")
            finance = walk.start(blocks["finance"], finance_out)
            wait_until(
                "the finance department system consuming",
                lambda: "reviewing for finance" in finance_log.read_text(errors="replace"),
                timeout=60,
                log=finance_log,
            )
            for block in blocks.values():
                if not block.background:
                    try:
                        run_step(walk, block)
                    except AssertionError as exc:
                        logs = f"{tail(run_log)}\n{tail(finance_log)}"
                        raise AssertionError(f"{exc}\n{logs}") from None
        finally:
            finance_status = stop(finance, grace=20) if finance is not None else None
            system_status = stop(system, grace=90)
    took = time.monotonic() - started
    print(f"the README walk took {took:.0f}s")

    assert finance_status == 0, finance_log.read_text(errors="replace")[-3000:]
    assert system_status == 0, run_log.read_text(errors="replace")[-3000:]
    verdicts = [
        (line["revision"], line["decision"])
        for line in map(json.loads, _lines_starting(finance_log, "{"))
    ]
    assert verdicts == [(1, "request_changes"), (2, "approve")]
    assert (walk_folder / "contract.pdf").read_bytes().startswith(b"%PDF")

    output = run_log.read_text(errors="replace")
    # the department users, their passwords printed once, their URLs in a private file
    for department in ("supervisor", "finance", "technical", "general_manager"):
        assert re.search(rf"department +{bus_prefix}dept-{department} +password: \S+", output)
    urls = walk_folder / ".local" / "departments.env"
    assert stat.S_IMODE(urls.stat().st_mode) == 0o600
    assert f"@127.0.0.1:5672/{infra.vhost}" in urls.read_text()
    # people read these lines off a pipe or a file: no colour codes
    assert ANSI not in output
    assert ANSI not in finance_log.read_text(errors="replace")


def run_step(walk: Walk, block: Block) -> None:
    check = CHECKS[block.name]
    deadline = time.monotonic() + RETRIED.get(block.name, 0)
    while True:
        began = time.monotonic()
        output = walk.run(block, timeout=TIMEOUTS.get(block.name, 30))
        print(f"step {block.name}: {time.monotonic() - began:.1f}s")
        try:
            check(output)
            return
        except AssertionError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(f"step {block.name!r}:\n{output}") from exc
        time.sleep(1)


def _lines_starting(path: Path, prefix: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(prefix)]
