"""The ``darkroom`` command: run the processes, migrate, make admin tokens, handle the DLQ, watch.

Server-side commands (run, up, worker, scheduler, migrate, admin) read the same settings
as the processes; client commands (dlq, watch) talk to a running Darkroom through its
public API with DARKROOM_URL and DARKROOM_TOKEN (else ADMIN_TOKEN), or --url / --token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from server.infra.settings import ClientSettings, Settings

# Exit codes: 0 done (a watched job completed), 1 the job failed or was cancelled,
# 2 usage, 3 refused or unreachable.
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


def _run(_args: argparse.Namespace) -> int:
    from server.__main__ import main

    main()
    return 0


def _up(_args: argparse.Namespace) -> int:
    from server.launcher import main

    return main()


def _worker(args: argparse.Namespace) -> int:
    return become("workers", (["--io"] if args.io else []) + list(args.dramatiq_args))


def _scheduler(_args: argparse.Namespace) -> int:
    return become("workers.scheduler", [])


def become(module: str, argv: list[str]) -> int:
    """Replace this process with ``python -m module argv``: same pid, same signals.

    The worker processes are the ``workers`` package's programs; the web side of the
    code never imports it (dependencies run one way: workers → server).
    """
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])
    return 0  # not reached; a stand-in for execv in tests returns here


def _migrate(args: argparse.Namespace) -> int:
    from server.data.db import SyncDatabase
    from server.data.migrate import head

    db = SyncDatabase(Settings.from_env().database_url)
    try:
        if args.check:
            found = db.current_revision()
            print(f"schema at {found or 'nothing'}, code needs {head()}")
            return 0 if found == head() else EXIT_FAILED
        if args.down:
            before, after = db.downgrade(args.down)
        else:
            before, after = db.migrate(args.revision)
    finally:
        db.dispose()
    print(f"schema: {before or 'empty'} -> {after}" if before != after
          else f"schema already at {after}")
    return 0


def _create_token(args: argparse.Namespace) -> int:
    import getpass

    from server.core.signing import hash_token, mint_token
    from server.data import store
    from server.data.db import SyncDatabase
    from server.data.migrate import SchemaOutOfDate
    from server.infra import logs
    from server.infra.audit import audit

    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    db = SyncDatabase(settings.database_url)
    token = mint_token()
    try:
        try:
            db.require_current_schema()
        except SchemaOutOfDate as exc:
            print(f"darkroom: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.user:
            user = db.write(store.set_admin, user_id=args.user)
            if user is None:
                print(f"darkroom: no user {args.user}", file=sys.stderr)
                return EXIT_USAGE
            db.write(store.create_token, user_id=user.id, token_hash=hash_token(token),
                     label=args.label)
        else:
            user = db.write(store.create_user, token_hash=hash_token(token), is_admin=True,
                            label=args.label)
    finally:
        db.dispose()
    audit(f"cli:{getpass.getuser()}", "admin.create_token", f"user:{user.id}", args.label)
    # The token itself is shown once, here; only its hash is kept.
    print(token)
    print(f"admin user {user.id}; keep the token secret, revoke it with "
          "DELETE /api/session", file=sys.stderr)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from server.client import Client

    defaults = ClientSettings.from_env()
    token = args.token or defaults.token
    if not token:
        raise SystemExit("darkroom: no token: set DARKROOM_TOKEN (or ADMIN_TOKEN) or pass --token")
    return Client(args.url or defaults.url, token)


def _print(args: argparse.Namespace, value: Any) -> None:
    if args.json:
        print(json.dumps(value, indent=2))


def _dlq_list(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    query = {k: v for k, v in (("type", args.type), ("error", args.error),
                               ("limit", args.limit)) if v}
    body = _client(args).call("GET", "/api/dlq" + (f"?{urlencode(query)}" if query else ""))
    if args.json:
        _print(args, body)
        return 0
    items = body["items"]
    if not items:
        print("the dead-letter queue is empty")
    for item in items:
        job, error = item["job"], item["error"]
        print(f"{job['id']}  {job['type']:<16} {item['failed_at']}  attempts {item['attempts']}"
              f"  {error['type']}: {error['message']}")
    return 0


def _dlq_retry(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.all:
        body = client.call("POST", "/api/dlq/retry")
        if args.json:
            _print(args, body)
            return EXIT_FAILED if body["errors"] else 0
        for job_id in body["retried"]:
            print(f"retried {job_id}")
        for failure in body["errors"]:
            print(f"not retried {failure['job_id']}: {failure['error']['message']}",
                  file=sys.stderr)
        return EXIT_FAILED if body["errors"] else 0
    if not args.job_ids:
        raise SystemExit("darkroom: name the jobs to retry, or pass --all")
    for job_id in args.job_ids:
        body = client.call("POST", f"/api/dlq/{job_id}/retry")
        if args.json:
            _print(args, body)
        else:
            print(f"retried {job_id}: {body['job']['state']}")
    return 0


def _dlq_clear(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.job_ids:
        for job_id in args.job_ids:
            client.call("DELETE", f"/api/dlq/{job_id}")
            print(f"removed {job_id}")
    elif args.all:
        client.call("DELETE", "/api/dlq")
        print("the dead-letter queue is cleared")
    else:
        raise SystemExit("darkroom: name the dead letters to remove, or pass --all")
    return 0


def _describe(name: str, job: dict[str, Any]) -> str:
    line = f"{name:<14} {job['state']:<9} {job['progress']:>3}%  {job['stage']}"
    if job.get("queue_position") is not None:
        line += f"  (position {job['queue_position']})"
    if job.get("error"):
        line += f"  {job['error']['type']}: {job['error']['message']}"
    return line


def _watch(args: argparse.Namespace) -> int:
    from server.client import watch_job

    client = _client(args)

    def show(name: str, job: dict[str, Any]) -> None:
        text = json.dumps({"event": name, "job": job}) if args.json else _describe(name, job)
        print(text, flush=True)

    watch = asyncio.run(watch_job(client.url, client.token, args.job_id, show,
                                  timeout=args.timeout))
    return 0 if watch.final == "job:completed" else EXIT_FAILED


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the Darkroom to talk to (default: DARKROOM_URL)")
    parser.add_argument("--token", help="bearer token (default: DARKROOM_TOKEN or ADMIN_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkroom", description="Darkroom: background image processing with live progress.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="the web process (REST, Socket.IO, pages)").set_defaults(
        func=_run)
    commands.add_parser(
        "up", help="everything on this machine, as `make run` (private Redis if no REDIS_URL)"
    ).set_defaults(func=_up)
    worker = commands.add_parser(
        "worker", help="supervised Dramatiq worker processes (any other option goes on to "
                       "dramatiq, e.g. -Q images images.high)")
    worker.add_argument("--io", action="store_true",
                        help="the I/O worker: webhook deliveries and e-mail only, on threads "
                             "of its own (IO_WORKER_THREADS)")
    worker.set_defaults(func=_worker, dramatiq_args=[])
    commands.add_parser("scheduler", help="cron schedules and housekeeping").set_defaults(
        func=_scheduler)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--down", metavar="REVISION", help="step back to REVISION (base: empty)")
    migrate.add_argument("--check", action="store_true",
                         help="only report; exit 1 if the schema is not current")
    migrate.set_defaults(func=_migrate)

    admin = commands.add_parser("admin", help="administration").add_subparsers(
        dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    token = admin.add_parser("create-token", help="print a new admin bearer token")
    token.add_argument("--user", help="make this existing user an admin instead of a new one")
    token.add_argument("--label", default="", help="a note kept with the token")
    token.set_defaults(func=_create_token)

    dlq = commands.add_parser("dlq", help="the dead-letter queue (admin token)").add_subparsers(
        dest="dlq_command", required=True, metavar="DLQ_COMMAND")
    listing = dlq.add_parser("list", help="dead letters, newest first")
    listing.add_argument("--type", help="only this task type")
    listing.add_argument("--error", help="only errors whose type or message contains this")
    listing.add_argument("--limit", type=int)
    listing.set_defaults(func=_dlq_list)
    retry = dlq.add_parser("retry", help="run dead letters again under the same ids")
    retry.add_argument("job_ids", nargs="*")
    retry.add_argument("--all", action="store_true")
    retry.set_defaults(func=_dlq_retry)
    clear = dlq.add_parser("clear", help="remove dead letters (the jobs stay failed)")
    clear.add_argument("job_ids", nargs="*")
    clear.add_argument("--all", action="store_true")
    clear.set_defaults(func=_dlq_clear)
    for sub in (listing, retry, clear):
        _add_client_options(sub)

    watch = commands.add_parser("watch", help="print a job's live events until it ends")
    watch.add_argument("job_id")
    watch.add_argument("--timeout", type=float, default=None, help="give up after seconds")
    _add_client_options(watch)
    watch.set_defaults(func=_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from server.client import ClientError

    parser = build_parser()
    # Options the worker does not know are Dramatiq's (argparse's REMAINDER would refuse
    # them when they come first); any other command takes none.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command != "worker":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.dramatiq_args = unknown
    try:
        return int(args.func(args))
    except ClientError as exc:
        print(f"darkroom: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
