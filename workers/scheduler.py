"""``python -m workers.scheduler``: cron-style maintenance, and users' schedules.

Runs with APScheduler: hourly clean-up of stray files (CLEANUP_CRON), a daily purge of
data older than RETENTION_DAYS (PURGE_CRON), and every SCHEDULE_POLL_S the firing of
users' schedules that are due. Any number of scheduler processes may run: each
maintenance run is claimed in Redis, and each schedule firing is made in one database
transaction that also moves the schedule on, so every firing happens once.

A firing follows the rules of now, whatever they were when the schedule was made: its
attempts are cut to its type's ceiling, a plain user's ``high`` fires as ``normal``, a
webhook firing is skipped while its owner has WEBHOOK_MAX_IN_FLIGHT_PER_USER deliveries
unfinished, and a schedule is deleted (logged) when its cron fires more often than
SCHEDULE_MIN_INTERVAL_S allows, or when it is an e-mail to a recipient its owner may no
longer mail (EMAIL_ALLOWED_RECIPIENTS, admins excepted; or not exactly one address): such a
schedule could never fire again, or only to fail every time. The e-mail worker checks the
recipient again, for every job.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from server.core import cron, keys
from server.core.jobs import queue_for
from server.core.mail_limits import recipient_allowed, single_address
from server.core.signing import hash_token
from server.core.tasks import EMAIL_SEND, WEBHOOK_DELIVER
from server.data import store
from server.data.models import Schedule, utcnow
from server.infra import logs, tracing
from server.infra.broker import build_broker
from server.infra.settings import Settings
from workers.context import WorkerContext
from workers.maintenance import clean_files, purge_old
from workers.tasks import registry as tasks

log = logging.getLogger("workers.scheduler")

# A claim outlives any clock skew between scheduler hosts.
_CLAIM_TTL_S = 3600

EMAIL_TASK = EMAIL_SEND.name


def once_per_minute(client: redis.Redis, prefix: str, name: str, work: Callable[[], object],
                    *, clock: Callable[[], float] = time.time) -> Callable[[], None]:
    """Wrap ``work`` so that, of all scheduler processes, one runs it per firing minute
    (``clock`` gives the epoch time)."""

    def run() -> None:
        minute = int(clock() // 60)
        try:
            claimed = client.set(keys.cron_run(prefix, name, minute), "1", nx=True,
                                 ex=_CLAIM_TTL_S)
        except redis.RedisError as exc:
            log.warning("skipping %s: Redis unavailable (%s)", name, exc)
            return
        if claimed:
            work()

    return run


def fire_due(ctx: WorkerContext, registry: dict[str, tasks.TaskType]) -> int:
    """Create a job for every schedule that is due; returns how many fired here."""
    now = utcnow()
    fired = 0
    for schedule in ctx.db.read(store.due_schedules, now=now):
        try:
            # With tracing on, each firing starts the trace its job's run goes on.
            with tracing.span("schedule fire", attributes={"darkroom.schedule.id": schedule.id,
                                                           "darkroom.job.type": schedule.type}):
                if _fire(ctx, registry.get(schedule.type), schedule, now):
                    fired += 1
        except Exception:  # one bad schedule must not stop the others
            log.exception("schedule %s failed to fire", schedule.id)
    return fired


def _fire(ctx: WorkerContext, task_type: tasks.TaskType | None, schedule: Schedule,
          now: datetime) -> bool:
    """Fire one due schedule under today's rules; whether a job was made here."""
    settings = ctx.settings
    whose = {"user_id": schedule.user_id}
    if task_type is None:
        # Moved on without a job, so it does not block the ones behind it.
        log.warning("schedule %s names unknown type %s", schedule.id, schedule.type,
                    extra=whose)
    elif too_frequent(schedule.cron, settings.schedule_min_interval_s):
        log.warning("schedule %s deleted: its cron %r can fire more often than once every "
                    "%s s (SCHEDULE_MIN_INTERVAL_S)", schedule.id, schedule.cron,
                    settings.schedule_min_interval_s, extra=whose)
        ctx.db.write(store.delete_schedule, user_id=schedule.user_id,
                     schedule_id=schedule.id)
        return False
    elif task_type.name == EMAIL_TASK and (refusal := _mail_refused(ctx, schedule)):
        log.warning("schedule %s deleted: %s; each firing would only fail", schedule.id,
                    refusal, extra=whose)
        ctx.db.write(store.delete_schedule, user_id=schedule.user_id,
                     schedule_id=schedule.id)
        return False
    queue: str | None = None
    priority, attempts = schedule.priority, schedule.max_attempts
    if task_type is not None:
        if task_type.max_attempts is not None:
            attempts = min(attempts, task_type.max_attempts)
        if priority == "high" and not _is_admin(ctx, schedule.user_id):
            priority = "normal"
        queue = queue_for(task_type.queue, priority)
        if task_type.name == WEBHOOK_DELIVER.name:
            limit = settings.webhook_max_in_flight_per_user
            pending = ctx.db.read(store.count_unfinished, user_id=schedule.user_id,
                                  task_type=WEBHOOK_DELIVER.name)
            if pending >= limit:
                log.warning("schedule %s skips this firing: its owner has %d webhook "
                            "deliveries unfinished (WEBHOOK_MAX_IN_FLIGHT_PER_USER=%d)",
                            schedule.id, pending, limit, extra=whose)
                queue = None  # moved on without a job
    view = ctx.db.write(
        store.fire_schedule, schedule_id=schedule.id, due=schedule.next_run_at,
        next_run_at=cron.next_run(schedule.cron, schedule.timezone, now), queue=queue,
        image_field=task_type.image_field if task_type else None, priority=priority,
        max_attempts=attempts)
    if view is None:
        return False  # made elsewhere, or nothing to make this time
    ctx.reporter.submit(view)
    return True


@functools.lru_cache(maxsize=1024)
def too_frequent(expression: str, minimum_s: int) -> bool:
    """Whether two firings of ``expression`` can be closer than ``minimum_s`` (0: never);
    remembered, as walking a day's firings takes a while and a schedule fires again and
    again."""
    if minimum_s <= 0:
        return False
    minimum = timedelta(seconds=minimum_s)
    return cron.shortest_interval(expression, below=minimum) < minimum


def _mail_refused(ctx: WorkerContext, schedule: Schedule) -> str | None:
    """Why the e-mail worker would refuse every firing of this ``email.send`` schedule
    (as ``workers.tasks.email.send_email`` checks), or None."""
    to = str(schedule.payload.get("to", ""))
    recipient = single_address(to)
    if recipient is None:
        return f"its recipient {to!r} is not exactly one address"
    allowed = ctx.settings.email_allowed_recipients
    if recipient_allowed(recipient, allowed) or _is_admin(ctx, schedule.user_id):
        return None
    return (f"its owner, not an admin, may no longer mail {recipient} "
            "(EMAIL_ALLOWED_RECIPIENTS)")


def _is_admin(ctx: WorkerContext, user_id: str) -> bool:
    token = ctx.settings.admin_token
    return ctx.db.read(store.user_is_admin, user_id=user_id,
                       admin_token_hash=hash_token(token) if token else None)


def main() -> int:
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    tracing.configure(settings, "darkroom-scheduler")
    ctx = WorkerContext.from_settings(settings, build_broker(settings, maintenance=False))
    registry = tasks.load(include_test_tasks=settings.enable_test_tasks)
    # APScheduler logs two lines per run of every job: the poll would flood the log.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(timezone=UTC)
    prefix = settings.redis_prefix
    scheduler.add_job(
        once_per_minute(ctx.redis, prefix, "cleanup",
                        lambda: clean_files(ctx.db, ctx.storage)),
        cron.utc_trigger(settings.cleanup_cron), id="cleanup")
    scheduler.add_job(
        once_per_minute(ctx.redis, prefix, "purge",
                        lambda: purge_old(ctx.db, ctx.storage, settings.retention_days)),
        cron.utc_trigger(settings.purge_cron), id="purge")
    scheduler.add_job(lambda: fire_due(ctx, registry),
                      IntervalTrigger(seconds=settings.schedule_poll_s), id="schedules",
                      max_instances=1, coalesce=True)

    def stop(signum: int, _frame: object) -> None:
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started: clean-up %r, purge %r, schedules every %s s",
             settings.cleanup_cron, settings.purge_cron, settings.schedule_poll_s)
    try:
        scheduler.start()
    finally:
        tracing.shutdown()  # the spans still batched go now
    return 0


if __name__ == "__main__":
    sys.exit(main())
