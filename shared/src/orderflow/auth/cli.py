"""`orderflow-admin`: the first administrator, local accounts and API keys, from a shell on
a machine that reaches the database (before anyone can sign in to do it over HTTP).

    orderflow-admin create-admin alice                   prints a generated password once
    orderflow-admin create-user zhang.wei --role salesperson --email zhang.wei@example.com
    orderflow-admin create-key crm --scope orders:write  prints the key once
    orderflow-admin revoke-key crm
    orderflow-admin list-keys | list-users
    orderflow-admin bootstrap-local                      accounts for a local try-out

The database: --database-url, else ORDERFLOW_AUTH_DATABASE_URL, else INTAKE_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from ..db import Pool
from . import passwords, store, tokens
from .identity import ADMIN, valid_role


def _database_url(given: str | None) -> str:
    url = (
        given
        or os.environ.get("ORDERFLOW_AUTH_DATABASE_URL")
        or os.environ.get("INTAKE_DATABASE_URL")
    )
    if not url:
        raise SystemExit(
            "orderflow-admin: give --database-url or set ORDERFLOW_AUTH_DATABASE_URL "
            "(or INTAKE_DATABASE_URL)"
        )
    return url


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from stdin, or a generated one (printed once)."""
    if getattr(args, "password_stdin", False):
        given = sys.stdin.readline().rstrip("\n")
        if (why := passwords.check_strength(given)) is not None:
            raise SystemExit(f"orderflow-admin: password refused: {why}")
        return given, False
    return tokens.new_password(), True


def _check_roles(roles: Sequence[str]) -> None:
    bad = [r for r in roles if not valid_role(r)]
    if bad:
        raise SystemExit(f"orderflow-admin: unknown role(s): {', '.join(bad)}")


async def _save_person(pool: Pool, args: argparse.Namespace, roles: list[str]) -> None:
    _check_roles(roles)
    password, generated = _password(args)
    await store.upsert_account(
        pool,
        username=args.username,
        display_name=args.display_name or args.username,
        email=args.email,
        roles=roles,
        team=args.team,
        password_hash=passwords.hash_password(password),
    )
    print(f"account {args.username} saved with roles {', '.join(roles) or '(none)'}")
    if generated:
        print(f"password (shown once): {password}")


async def _run(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(_database_url(args.database_url), min_size=1, max_size=2)
    assert pool is not None
    try:
        await store.prepare(pool)
        await COMMANDS[args.command](pool, args)
    finally:
        await pool.close()


async def _create_admin(pool: Pool, args: argparse.Namespace) -> None:
    await _save_person(pool, args, sorted({ADMIN, *args.role}))


async def _create_user(pool: Pool, args: argparse.Namespace) -> None:
    await _save_person(pool, args, args.role)


async def _set_password(pool: Pool, args: argparse.Namespace) -> None:
    password, generated = _password(args)
    if not await store.set_password(pool, args.username, passwords.hash_password(password)):
        raise SystemExit(f"orderflow-admin: there is no account {args.username}")
    print(f"password of {args.username} set" + (f" (shown once): {password}" if generated else ""))


async def _disable(pool: Pool, args: argparse.Namespace) -> None:
    if not await store.set_disabled(pool, args.username, True):
        raise SystemExit(f"orderflow-admin: there is no account {args.username}")
    print(f"account {args.username} disabled; its sessions ended")


async def _create_key(pool: Pool, args: argparse.Namespace) -> None:
    _check_roles(args.scope)
    expires = (
        datetime.now(UTC) + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    )
    try:
        _, token = await store.create_api_key(
            pool, name=args.name, scopes=args.scope, created_by=args.by, expires_at=expires
        )
    except asyncpg.UniqueViolationError:
        raise SystemExit(f"orderflow-admin: there is already a key named {args.name}") from None
    if args.quiet:
        print(token)
    else:
        print(f"API key {args.name} with scopes {', '.join(args.scope)} (shown once):\n{token}")


async def _revoke_key(pool: Pool, args: argparse.Namespace) -> None:
    if await store.revoke_api_key(pool, args.name, by=args.by) is None:
        raise SystemExit(f"orderflow-admin: there is no key named {args.name}")
    print(f"API key {args.name} revoked")


async def _list_keys(pool: Pool, args: argparse.Namespace) -> None:
    for key in await store.list_api_keys(pool):
        state = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.isoformat() if key.last_used_at else "never"
        print(f"{key.name}\t{state}\t{','.join(key.scopes)}\tlast used {used}")


async def _list_users(pool: Pool, args: argparse.Namespace) -> None:
    for account in await store.list_accounts(pool):
        state = "disabled" if account.disabled else "active"
        print(f"{account.username}\t{state}\t{','.join(account.roles)}")


#: The people of a local try-out: the example orders' salespeople, a manager, a reviewer per
#: department of the default policy, operations and an administrator.
LOCAL_PEOPLE: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("it.admin", "IT Admin", (ADMIN,), ()),
    ("zhang.wei", "张伟", ("salesperson",), ()),
    ("chen.jing", "陈静", ("salesperson",), ()),
    ("zhao.lei", "赵磊", ("sales_manager",), ("zhang.wei", "chen.jing")),
    *(
        (f"{d}.reviewer", f"{d.replace('_', ' ').title()} reviewer", (f"reviewer:{d}",), ())
        for d in ("supervisor", "production", "service_delivery", "finance", "technical")
    ),
    ("ops.on.call", "Ops on call", ("ops",), ()),
)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


async def _bootstrap_local(pool: Pool, args: argparse.Namespace) -> None:
    """Local accounts with generated passwords, written once to a file only its owner reads;
    run again, it keeps them and says where they are."""
    path = Path(args.file)
    kept = path.exists()  # noqa: ASYNC240 - a command-line tool: nothing else waits on it
    existing = await store.get_account(pool, LOCAL_PEOPLE[0][0])
    if existing is not None and kept:
        print(f"local sign-in details are in {path}")
        return
    lines = ["# Local accounts (username  password  roles); generated, for this machine only"]
    for username, name, roles, team in LOCAL_PEOPLE:
        password = tokens.new_password()
        await store.upsert_account(
            pool,
            username=username,
            display_name=name,
            roles=roles,
            team=team,
            password_hash=passwords.hash_password(password),
        )
        lines.append(f"{username}  {password}  {','.join(roles)}")
    _write_private(path, "\n".join(lines) + "\n")
    print("local accounts created; usernames and passwords (shown once here):\n")
    print("\n".join(lines[1:]))
    print(f"\nkept in {path} (readable by you only)")


COMMANDS = {
    "create-admin": _create_admin,
    "create-user": _create_user,
    "set-password": _set_password,
    "disable": _disable,
    "create-key": _create_key,
    "revoke-key": _revoke_key,
    "list-keys": _list_keys,
    "list-users": _list_users,
    "bootstrap-local": _bootstrap_local,
}


def _person_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("username")
    p.add_argument("--display-name")
    p.add_argument("--email")
    p.add_argument("--role", action="append", default=[], help="repeat for several roles")
    p.add_argument("--team", action="append", default=[], help="a salesperson a manager sees")
    p.add_argument("--password-stdin", action="store_true", help="else one is generated")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orderflow-admin", description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url")
    sub = p.add_subparsers(dest="command", required=True)
    _person_args(sub.add_parser("create-admin", help="an administrator account"))
    _person_args(sub.add_parser("create-user", help="a local account with roles"))
    sp = sub.add_parser("set-password")
    sp.add_argument("username")
    sp.add_argument("--password-stdin", action="store_true")
    sub.add_parser("disable").add_argument("username")
    ck = sub.add_parser("create-key", help="an API key for a company system")
    ck.add_argument("name")
    ck.add_argument("--scope", action="append", required=True, help="repeat for several")
    ck.add_argument("--expires-in-days", type=int)
    ck.add_argument("--by", default=os.environ.get("USER", "orderflow-admin"))
    ck.add_argument("--quiet", action="store_true", help="print only the key")
    rk = sub.add_parser("revoke-key")
    rk.add_argument("name")
    rk.add_argument("--by", default=os.environ.get("USER", "orderflow-admin"))
    sub.add_parser("list-keys")
    sub.add_parser("list-users")
    bl = sub.add_parser("bootstrap-local", help="accounts for a local try-out")
    bl.add_argument("--file", default=".local/sign-in.txt")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(_run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
