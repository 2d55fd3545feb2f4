"""Print a RabbitMQ password hash (rabbit_password_hashing_sha256) for a definitions file:

    uv run python scripts/rabbitmq_password_hash.py            reads the password from stdin
    uv run python scripts/rabbitmq_password_hash.py --user intake --tags ""
                                                    prints a whole `users` entry

A definitions file takes hashes, not passwords: base64(salt + sha256(salt + password)) with a
random 4-byte salt, which is what `rabbitmqctl hash_password` computes on newer servers.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import secrets
import sys


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(4)
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", help="print a definitions `users` entry for this user")
    parser.add_argument("--tags", default="", help="the user's tags, e.g. administrator")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 1
    hashed = password_hash(password)
    if args.user:
        entry = {
            "name": args.user,
            "password_hash": hashed,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [t for t in args.tags.split(",") if t],
            "limits": {},
        }
        print(json.dumps(entry, indent=2))
    else:
        print(hashed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
