"""`scalpscan users`: staff accounts of the clinic web app (add, list, remove)."""

from __future__ import annotations

import argparse
import getpass
import sys

from scalpscan.scripts.commands.serve import add_storage_arguments

HELP = "manage the clinic web app's staff accounts: add, list, remove"

EPILOG = """\
examples:
  scalpscan users add alice --data clinic/          # asks for the password twice
  printf '%s\\n' "$PASSWORD" | scalpscan users add bob --data clinic/ --password-stdin
  scalpscan users list --data clinic/
  scalpscan users remove bob --data clinic/         # also ends bob's logins
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan users`."""
    parser.add_argument("action", choices=("add", "list", "remove"), help="what to do")
    parser.add_argument("name", nargs="?", help="the staff member's user name (add, remove)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (scripts)")
    add_storage_arguments(parser)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        print("scalpscan users: error: the two passwords differ", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Run the action; returns the exit code."""
    from sqlalchemy import select

    from scalpscan.app.auth import AuthError, add_user
    from scalpscan.app.config import sqlite_url
    from scalpscan.app.db import AuditEntry, User, open_database

    if args.action in ("add", "remove") and not args.name:
        print(f"scalpscan users {args.action}: error: give the user NAME", file=sys.stderr)
        return 2
    try:
        _, sessions = open_database(args.db or sqlite_url(args.data))
    except Exception as exc:  # a wrong URL, an unreachable server: say which
        print(f"scalpscan users: error: cannot open the database: {exc}", file=sys.stderr)
        return 2
    with sessions() as db:
        if args.action == "list":
            for user in db.scalars(select(User).order_by(User.name)):
                print(f"{user.name}\tsince {user.created_at:%Y-%m-%d}")
            return 0
        if args.action == "remove":
            user = db.scalar(select(User).where(User.name == args.name))
            if user is None:
                print(f"scalpscan users: error: no user {args.name!r}", file=sys.stderr)
                return 2
            db.delete(user)
            db.add(AuditEntry(user="(command line)", action="remove user", target=args.name))
            db.commit()
            print(f"removed {args.name}")
            return 0
        password = _password(args)
        if password is None:
            return 2
        try:
            add_user(db, args.name, password)
        except AuthError as exc:
            print(f"scalpscan users: error: {exc}", file=sys.stderr)
            return 2
        db.add(AuditEntry(user="(command line)", action="add user", target=args.name))
        db.commit()
    print(f"added {args.name}")
    return 0
