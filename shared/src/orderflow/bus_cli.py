"""`orderflow-bus`: set up a vhost's topology and its least-privilege users.

    orderflow-bus provision [--vhost orderflow] [--department D ...] [--submitter NAME ...]
                            [--listener NAME=order.approved,contract.drafted ...] [--rotate]
                            [--department-user-pattern dept-{department}]
    orderflow-bus add-department D            a department's queue and its user dept-D
    orderflow-bus add-submitter NAME          a system that sends order.submit
    orderflow-bus add-listener NAME --events order.approved,contract.drafted
    orderflow-bus definitions [--vhost V]     the topology as a definitions document

Administrator credentials: `--api http://admin:secret@host:15672` (or ORDERFLOW_RABBITMQ_API;
the password may come from --admin-password-file), or `--rabbitmqctl` on the broker's own
machine. New passwords are generated, written once to --credentials (an env file, mode 600)
and/or --secrets-dir (a file per user), and the outside systems' printed once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from . import busaccess, provisioning, topology


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderflow-bus", description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=os.environ.get("ORDERFLOW_RABBITMQ_API"))
    parser.add_argument(
        "--admin-password-file",
        type=Path,
        default=os.environ.get("ORDERFLOW_RABBITMQ_ADMIN_PASSWORD_FILE") or None,
        help="the administrator's password, instead of the one in --api",
    )
    parser.add_argument("--rabbitmqctl", action="store_true", help="use the local rabbitmqctl")
    parser.add_argument("--vhost", default="orderflow")
    parser.add_argument("--credentials", type=Path, help="env file for new passwords (mode 600)")
    parser.add_argument("--secrets-dir", type=Path, help="a file per user for new passwords")
    parser.add_argument(
        "--rotate-unknown",
        action="store_true",
        help="a new password for an existing user whose password neither --credentials nor "
        "--secrets-dir holds (they were lost)",
    )
    parser.add_argument(
        "--quiet-passwords",
        action="store_true",
        help="do not print the outside systems' new passwords (they are in the files)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    provision = sub.add_parser("provision", help="topology, service and department users")
    provision.add_argument("--department", action="append", default=[], help="more departments")
    provision.add_argument("--submitter", action="append", default=[], help="a submitter user")
    provision.add_argument(
        "--listener", action="append", default=[], help="NAME=event.type,event.type"
    )
    provision.add_argument("--rotate", action="store_true", help="new passwords for all of them")
    provision.add_argument(
        "--department-user-pattern",
        default="dept-{department}",
        help="the departments' users (REVIEW_ROUTER_VERDICT_USER_PATTERN must match)",
    )
    department = sub.add_parser("add-department", help="a department's queue and user")
    department.add_argument("department")
    department.add_argument("--user", help="its user (default dept-<department>)")
    submitter = sub.add_parser("add-submitter", help="a system that sends order.submit")
    submitter.add_argument("name")
    listener = sub.add_parser("add-listener", help="a system that listens to events")
    listener.add_argument("name")
    listener.add_argument("--events", required=True, help="comma-separated event types")
    for command in (department, submitter, listener):
        command.add_argument("--rotate", action="store_true", help="a new password")
    definitions = sub.add_parser("definitions", help="print the topology (no users)")
    definitions.add_argument("--department", action="append", default=[])
    return parser


def _broker(args: argparse.Namespace) -> provisioning.Broker:
    if args.rabbitmqctl:
        return provisioning.Rabbitmqctl()
    if not args.api:
        raise SystemExit("orderflow-bus: give --api (or ORDERFLOW_RABBITMQ_API) or --rabbitmqctl")
    url = args.api
    if args.admin_password_file is not None:
        parts = urlsplit(url)
        password = quote(args.admin_password_file.read_text().strip(), safe="")
        netloc = f"{parts.username or 'admin'}:{password}@{parts.hostname}:{parts.port or 15672}"
        url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return provisioning.ManagementApi(url)


def _listener(spec: str) -> provisioning.Account:
    name, sep, types = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"orderflow-bus: --listener {spec!r}: expected NAME=type,type")
    return provisioning.listener_account(name, [t.strip() for t in types.split(",") if t.strip()])


def _departments(extra: Sequence[str]) -> list[str]:
    return list(dict.fromkeys((*topology.DEFAULT_DEPARTMENTS, *extra)))


def _accounts(args: argparse.Namespace) -> tuple[list[provisioning.Account], list[str]]:
    """The accounts the command is about, and the extra departments it needs queues for."""
    if args.command == "provision":
        users = json.loads(os.environ.get("ORDERFLOW_BUS_USERS") or "{}")
        accounts = provisioning.service_accounts(users)
        pattern = args.department_user_pattern
        if "{department}" not in pattern:
            raise ValueError(f"--department-user-pattern {pattern!r} lacks {{department}}")
        accounts += [
            provisioning.department_account(d, pattern=pattern)
            for d in _departments(args.department)
        ]
        accounts += [provisioning.submitter_account(n) for n in args.submitter]
        accounts += [_listener(spec) for spec in args.listener]
        return accounts, list(args.department)
    if args.command == "add-department":
        return [provisioning.department_account(args.department, name=args.user)], [args.department]
    if args.command == "add-submitter":
        return [provisioning.submitter_account(args.name)], []
    return [_listener(f"{args.name}={args.events}")], []


def _report(
    args: argparse.Namespace,
    accounts: Sequence[provisioning.Account],
    outcome: provisioning.Outcome,
) -> None:
    kinds = {a.name: a.kind for a in accounts}
    if outcome.created:
        if args.credentials:
            provisioning.write_env_file(args.credentials, outcome.created)
            print(f"new passwords written to {args.credentials} (mode 600)")
        if args.secrets_dir:
            provisioning.write_secrets_dir(args.secrets_dir, outcome.created)
            print(f"new passwords written to {args.secrets_dir}/<user>/password (mode 600)")
        if not (args.credentials or args.secrets_dir) or not args.quiet_passwords:
            # shown this once: RabbitMQ keeps only a hash
            for name, password in outcome.created.items():
                if kinds[name] != "service" or not (args.credentials or args.secrets_dir):
                    print(f"  {kinds[name]:<10} {name}  password: {password}")
    for name in outcome.kept:
        print(f"  {kinds[name]:<10} {name}  exists, keeps its password (--rotate for a new one)")


def _rotating(args: argparse.Namespace, accounts: Sequence[provisioning.Account]) -> list[str]:
    if args.rotate:
        return [a.name for a in accounts]
    if not args.rotate_unknown:
        return []
    known = provisioning.read_env_file(args.credentials) if args.credentials else {}

    def unknown(name: str) -> bool:
        in_file = provisioning.env_name(name) in known
        in_dir = args.secrets_dir and provisioning.secret_file(args.secrets_dir, name).exists()
        return not (in_file or in_dir)

    return [a.name for a in accounts if unknown(a.name)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    busaccess.check_tables()
    if args.command == "definitions":
        document = provisioning.topology_definitions(args.vhost, args.department)
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    try:
        accounts, departments = _accounts(args)
    except ValueError as exc:  # an unknown event type, say
        raise SystemExit(f"orderflow-bus {args.command}: {exc}") from None
    broker = _broker(args)
    outcome = provisioning.provision(
        broker,
        vhost=args.vhost,
        accounts=accounts,
        departments=departments,
        rotate=_rotating(args, accounts),
        with_topology=args.command in ("provision", "add-department"),
    )
    print(f"vhost {args.vhost}: topology and permissions of {len(accounts)} user(s) in place")
    _report(args, accounts, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
