"""``retrieval agents add|passwd|disable|enable|list``: console accounts. Passwords are read
from a prompt (twice) or, when stdin is not a terminal, from its first line; never from the
command line. ``disable`` ends the agent's sessions at once and refuses their logins."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from ..errors import InputError

__all__ = ["register", "run_agents"]


def register(sub: Any) -> None:
    from ..cliargs import add_common_options as _common

    p = sub.add_parser(
        "agents",
        help="manage agent console accounts (add, passwd, disable, enable, list)",
        description="Create agent accounts for the console at /agent/. The password is asked "
        "for at a prompt, or read from the first line of stdin when that is not a terminal. "
        "'disable' logs the agent out everywhere and refuses their logins until 'enable'.",
    )
    _common(p)
    p.add_argument(
        "action", choices=("add", "passwd", "disable", "enable", "list"), help="what to do"
    )
    p.add_argument("name", nargs="?", help="the agent's login name (all but list)")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InputError("the passwords differ; nothing was changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run_agents(args: argparse.Namespace) -> int:
    from ..cliargs import settings_from_args as _settings
    from ..store import make_engine, migrate
    from .auth import add_agent, check_name, list_agents, set_active, set_password

    engine = make_engine(_settings(args).resolved_database_url)
    try:
        migrate(engine)
        if args.action == "list":
            for name, created, active in list_agents(engine):
                sys.stdout.write(
                    f"{name}\t{created:%Y-%m-%d}\t{'active' if active else 'disabled'}\n"
                )
            return 0
        if not args.name:
            raise InputError(f"give the agent's name: retrieval agents {args.action} NAME")
        check_name(args.name)
        if args.action in ("disable", "enable"):
            set_active(engine, args.name, args.action == "enable")
            sys.stdout.write(
                f"agent '{args.name}' disabled; their sessions were ended\n"
                if args.action == "disable"
                else f"agent '{args.name}' enabled; they can log in again\n"
            )
            return 0
        password = _read_password()
        if args.action == "add":
            add_agent(engine, args.name, password)
            sys.stdout.write(f"agent '{args.name}' created; they can log in at /agent/login\n")
        else:
            set_password(engine, args.name, password)
            sys.stdout.write(f"password of '{args.name}' changed; their sessions were ended\n")
        return 0
    finally:
        engine.dispose()
