"""`orderflow-dlq`: list, show, replay or discard dead letters from the command line.

    orderflow-dlq list [--queue intake.commands.dlq] [--code CODE] [--reason TEXT]
    orderflow-dlq show MESSAGE_ID [--queue Q]
    orderflow-dlq replay QUEUE.dlq (--all | --message-id ID ...)
    orderflow-dlq discard QUEUE.dlq --message-id ID ... --note "why"

The broker comes from `--amqp-url` or `ORDERFLOW_AMQP_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys

import aio_pika

from . import deadletters


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderflow-dlq", description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=os.environ.get("ORDERFLOW_AMQP_URL"))
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="dead letters by queue and reason")
    listing.add_argument("--queue", action="append", help="a .dlq queue (default: all known)")
    listing.add_argument("--reason", help="only those whose reason contains this text")
    listing.add_argument("--code", help="only those with this refusal code, e.g. missing_user_id")
    listing.add_argument("--department", action="append", default=[], help="extra departments")
    show = sub.add_parser("show", help="one dead letter, with headers and body")
    show.add_argument("message_id")
    show.add_argument("--queue", action="append")
    replay = sub.add_parser("replay", help="send back to the queue it failed in")
    replay.add_argument("queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true")
    which.add_argument("--message-id", action="append")
    discard = sub.add_parser("discard", help="drop for good, with a note (kept in ops.discarded)")
    discard.add_argument("queue")
    discard.add_argument("--message-id", action="append", required=True)
    discard.add_argument("--note", required=True)
    return parser


async def _run(args: argparse.Namespace) -> int:
    connection = await aio_pika.connect(args.amqp_url)
    try:
        if args.command in ("list", "show"):
            queues = args.queue or deadletters.known_dead_letter_queues(
                getattr(args, "department", [])
            )
            found = []
            for dlq in queues:
                try:
                    found += [
                        (dlq, d) for d in await deadletters.list_dead_letters(connection, dlq)
                    ]
                except aio_pika.exceptions.ChannelClosed:
                    continue  # not declared on this broker
            if args.command == "show":
                found = [(q, d) for q, d in found if d.message_id == args.message_id]
                if not found:
                    print(f"no dead letter with message id {args.message_id}", file=sys.stderr)
                    return 1
                for dlq, letter in found:
                    print(
                        json.dumps({"dlq": dlq, **letter.as_dict()}, ensure_ascii=False, indent=2)
                    )
                return 0
            if args.reason:
                found = [(q, d) for q, d in found if args.reason in d.reason]
            if args.code:
                found = [(q, d) for q, d in found if d.code == args.code]
            if args.json:
                print(json.dumps([{"dlq": q, **d.as_dict()} for q, d in found], ensure_ascii=False))
            else:
                for dlq, d in found:
                    print(f"{dlq}\t{d.message_id}\t{d.message_type}\t{d.code}\t{d.reason}")
                print(f"{len(found)} dead letter(s)", file=sys.stderr)
            return 0
        if args.command == "replay":
            ids = None if args.all else set(args.message_id)
            done = await deadletters.replay(connection, args.queue, message_ids=ids)
            print(f"replayed {len(done)}: {' '.join(done)}")
            return 0 if done or args.all else 1
        done = await deadletters.discard(
            connection,
            args.queue,
            message_ids=set(args.message_id),
            note=args.note,
            by=getpass.getuser(),
        )
        print(f"discarded {len(done)}: {' '.join(done)}")
        return 0 if done else 1
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.amqp_url:
        print("orderflow-dlq: give --amqp-url or set ORDERFLOW_AMQP_URL", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
