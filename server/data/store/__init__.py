"""Every query and write, as sync functions of a Session, one module per aggregate.

The web process runs them through ``Database`` (on a SQLite file in a thread of its
own, on PostgreSQL through psycopg's async driver via ``run_sync``), workers through
``SyncDatabase``; either way each call is one short transaction.
All arguments after the session are keyword-only. Queries only: what a change means
(image status, what a transition writes, caps, the line's order) is ``server.core``'s,
and the wire shapes are ``server.services.presenter``'s.
"""

from server.data.store.batches import BatchProgress, batch_jobs, batch_progress, create_batch
from server.data.store.dead_letters import (
    clear_dead_letters,
    dead_letter,
    dead_letter_count,
    dead_letter_ids,
    delete_dead_letter,
    list_dead_letters,
    requeue_failed,
)
from server.data.store.images import delete_image, get_image, list_images, record_image_output
from server.data.store.jobs import (
    begin_attempt,
    cancel_job,
    count_unfinished,
    create_job,
    create_task_job,
    delete_job,
    get_job,
    report_progress,
    transition,
    withdraw_outputs,
)
from server.data.store.line import (
    advance_line,
    get_job_positioned,
    line_front,
    queue_position,
    queue_positions,
    snapshot_jobs,
)
from server.data.store.messages import (
    mark_enqueued,
    mark_enqueued_many,
    new_message_id,
    renew_message,
    silent_active_jobs,
    unsent_jobs,
)
from server.data.store.queues import mark_paused, show_paused
from server.data.store.retention import clean_finished, existing_image_ids, purge_finished
from server.data.store.schedules import (
    create_schedule,
    delete_schedule,
    due_schedules,
    fire_schedule,
    list_schedules,
)
from server.data.store.search import job_conditions, list_jobs, views_of
from server.data.store.stats import (
    finished_job_counts,
    job_counts_by_type,
    oldest_waiting,
    queue_stats,
    unfinished_job_counts,
)
from server.data.store.timeline import job_timeline, keep_pushed
from server.data.store.uploads import (
    create_image_job,
    create_uploads,
    delete_upload,
    new_upload,
)
from server.data.store.users import (
    create_token,
    create_user,
    ensure_user,
    existing_token_ids,
    revoke_token,
    set_admin,
    user_by_token_hash,
    user_is_admin,
)
from server.data.store.views import JobView
from server.data.store.webhooks import (
    create_webhook,
    create_webhook_deliveries,
    delete_webhook,
    deliveries_of,
    end_with_deliveries,
    list_webhooks,
)

__all__ = [
    "BatchProgress",
    "JobView",
    "advance_line",
    "batch_jobs",
    "batch_progress",
    "begin_attempt",
    "cancel_job",
    "clean_finished",
    "clear_dead_letters",
    "count_unfinished",
    "create_batch",
    "create_image_job",
    "create_job",
    "create_schedule",
    "create_task_job",
    "create_token",
    "create_uploads",
    "create_user",
    "create_webhook",
    "create_webhook_deliveries",
    "dead_letter",
    "dead_letter_count",
    "dead_letter_ids",
    "delete_dead_letter",
    "delete_image",
    "delete_job",
    "delete_schedule",
    "delete_upload",
    "delete_webhook",
    "deliveries_of",
    "due_schedules",
    "end_with_deliveries",
    "ensure_user",
    "existing_image_ids",
    "existing_token_ids",
    "finished_job_counts",
    "fire_schedule",
    "get_image",
    "get_job",
    "get_job_positioned",
    "job_conditions",
    "job_counts_by_type",
    "job_timeline",
    "keep_pushed",
    "line_front",
    "list_dead_letters",
    "list_images",
    "list_jobs",
    "list_schedules",
    "list_webhooks",
    "mark_enqueued",
    "mark_enqueued_many",
    "mark_paused",
    "new_message_id",
    "new_upload",
    "oldest_waiting",
    "purge_finished",
    "queue_position",
    "queue_positions",
    "queue_stats",
    "record_image_output",
    "renew_message",
    "report_progress",
    "requeue_failed",
    "revoke_token",
    "set_admin",
    "show_paused",
    "silent_active_jobs",
    "snapshot_jobs",
    "transition",
    "unfinished_job_counts",
    "unsent_jobs",
    "user_by_token_hash",
    "user_is_admin",
    "views_of",
    "withdraw_outputs",
]
