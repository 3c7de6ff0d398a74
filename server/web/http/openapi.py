"""The OpenAPI 3.1 document of the REST API, built once from the tables below (pure).

Each operation is one ``_op(...)`` call in ``_paths()``: its 2xx answers, the error
statuses it can give besides the ones its access level implies (401 for users, 401
and 403 for admins, 503 for anything that reads the database or Redis), and its
parameters and body. The shapes are not written here: ``components.schemas`` is
generated from the Structs of ``server.core.wire`` that the presenter builds and the
request validation checks against (every field sent is required, nullable ones say so,
and a closed shape has ``additionalProperties: false``).
``tests/server/test_openapi.py`` checks that every /api route is documented;
``tests/integration/test_openapi.py`` runs schemathesis against a live server.
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata
from typing import Any

import msgspec

from server.core.queue_figures import COUNTED_STATES
from server.core.search import MAX_NAME_CHARS, MAX_TEXT_CHARS, MIN_HASH_PREFIX
from server.core.signing import FILE_KINDS
from server.core.validation import MAX_CLEAN_AGE_S, MAX_DELAY_S, MAX_PAGE, PRIORITIES
from server.core.wire import requests, responses
from server.core.wire.fields import REF_TEMPLATE, ref

Schema = dict[str, Any]

# Access levels: who may call, and so which errors every such call can give.
PUBLIC, USER, ADMIN = "public", "user", "admin"

_ERRORS = {
    400: ("BadRequest", "The request is malformed or a value is out of range."),
    401: ("Unauthorized", "The bearer token is missing or unknown."),
    403: ("Forbidden", "The caller is not an admin (or a signed link is invalid or expired, "
                       "or `priority: high` is for admins here: priority_not_allowed, or an "
                       "e-mail recipient plain users may not mail: recipient_not_allowed)."),
    404: ("NotFound", "No such resource, or it belongs to another user."),
    409: ("Conflict", "The resource is not in a state that allows this."),
    413: ("TooLarge", "A body, file or form field is over its cap (payload_too_large, "
                      "file_too_large, fields_too_large), or an image over the pixel or "
                      "decode-memory cap (image_too_large)."),
    415: ("UnsupportedType", "The file is not an image of a supported format."),
    422: ("Unprocessable", "The input is well-formed but does not make sense; "
                           "`error.fields` names each bad field where there are several."),
    429: ("RateLimited", "A rate is spent (uploads, task submissions, new sessions, "
                         "high-priority jobs, e-mails, webhook deliveries in flight); "
                         "`Retry-After` says when to try again."),
    503: ("Unavailable", "The database or the job queue is down; try again shortly."),
}


def _ref(name: str) -> Schema:
    return ref(name)


# The shapes the operations name; msgspec adds every shape they contain, except Upload and
# RefusedFile as BatchUpload's items name them (by reference: see responses.BatchItem).
_SHAPES = (
    responses.Error, responses.Session, responses.Upload, responses.RefusedFile,
    responses.ImagePage, responses.Image, responses.BatchUpload, responses.Batch,
    responses.JobPage, responses.Job, responses.Timeline, responses.JobEnvelope,
    responses.ScheduleEnvelope, responses.TaskTypes, responses.Schedules,
    responses.WebhookCreated, responses.Webhooks, responses.DeadLetterPage,
    responses.DeadLetterRetry, responses.QueueReport, responses.QueueState,
    responses.QueueCleaned, responses.Health, responses.WorkerRoster,
    responses.Charts,
    requests.TaskRequest, requests.WebhookRequest, requests.CleanRequest,
)


def _schemas() -> dict[str, Schema]:
    """``components.schemas``, generated from the wire shapes (``server.core.wire``)."""
    _, components = msgspec.json.schema_components(_SHAPES, ref_template=REF_TEMPLATE)
    return components


_PRIORITY: Schema = {"type": "string", "enum": list(PRIORITIES)}


# --------------------------------------------------------------------------- operations

def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    out: Schema = {"description": description,
                   "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _path(name: str, description: str, **schema: Any) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", **schema}}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_PAGE = [
    _query("limit", f"Page size, 1 to {MAX_PAGE}.",
           {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}),
    _query("before", "Cursor: the next_before of the previous page.", {"type": "string"}),
]

_TEXT: Schema = {"type": "string", "maxLength": MAX_TEXT_CHARS}
# The filters of server.core.search (GET /api/jobs, the dead-letter queue's routes).
_SEARCH = [
    _query("id", "A job id, its start, or its last characters (the short id shown).",
           {"type": "string", "pattern": "^[0-9a-fA-F]{1,32}$"}),
    _query("type", "Only jobs of this task type.",
           {"type": "string", "maxLength": MAX_NAME_CHARS}),
    _query("queue", "Only this queue; a base name covers its priorities (images: "
                    "images.high too).", {"type": "string", "maxLength": MAX_NAME_CHARS}),
    _query("filename", "Text in the image's filename, any case.", _TEXT),
    _query("sha256", "The image's content hash, or its start.",
           {"type": "string", "pattern": f"^[0-9a-fA-F]{{{MIN_HASH_PREFIX},64}}$"}),
    _query("error", "Text in the error's type or message, any case.", _TEXT),
    _query("from", "Made at or after this time.", {"type": "string", "format": "date-time"}),
    _query("to", "Made before this time.", {"type": "string", "format": "date-time"}),
]
_USER = _query("user", "Only this user's.", {"type": "string", "maxLength": MAX_NAME_CHARS})


def _op(summary: str, tag: str, ok: dict[int, Schema], *, access: str = USER,
        errors: tuple[int, ...] = (), parameters: list[Schema] | None = None,
        body: Schema | None = None, description: str | None = None,
        touches_state: bool = True) -> Schema:
    """One operation: its answers plus the errors its access level implies."""
    statuses = set(errors)
    if access in (USER, ADMIN):
        statuses.add(401)
    if access == ADMIN:
        statuses.add(403)
    if touches_state:
        statuses.add(503)
    responses: dict[str, Any] = {str(status): answer for status, answer in sorted(ok.items())}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    out: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        out["description"] = description
    if access == PUBLIC:
        out["security"] = []
    elif access == ADMIN:
        out["description"] = ((description + "\n\n") if description else "") + \
            "Admin only: a token of an admin user (ADMIN_TOKEN)."
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = body
    return out


def _json_body(schema: Schema, *, required: bool = True,
               example: Any = None, examples: dict[str, Any] | None = None) -> Schema:
    media: Schema = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    elif example is not None:
        media["example"] = example
    return {"required": required, "content": {"application/json": media}}


def _multipart(*, many: bool) -> Schema:
    file: Schema = {"type": "string", "format": "binary", "contentMediaType": "image/*"}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "array", "items": file, "minItems": 1, "maxItems": 100}
                if many else file,
                "priority": {**_PRIORITY, "default": "normal"},
                "delay": {"type": "integer", "minimum": 0, "maximum": MAX_DELAY_S,
                          "default": 0, "description": "Seconds before processing may start."},
            },
        },
        "encoding": {"file": {"contentType": "image/*"}},
    }}}


_NO_CONTENT: Schema = {"description": "Done; no body."}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds until a new allowance.",
                                "schema": {"type": "integer", "minimum": 1}}}
_IMAGE_ID = _path("image_id", "The image's id.")
_JOB_ID = _path("job_id", "The job's id.")
_AGE: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_CLEAN_AGE_S}
_QUEUE = _path("name", "A base queue name from GET /api/queues (e.g. images).")
_TASK_EXAMPLES = {
    "email": {"type": "email.send", "priority": "low", "max_attempts": 3,
              "payload": {"to": "ana@example.com", "subject": "Ready",
                          "body": "Your photos are in."}},
    "schedule": {"type": "email.send", "payload": {"to": "ana@example.com", "subject": "Daily"},
                 "repeat": {"cron": "30 7 * * 1-5", "timezone": "Europe/Paris"}},
}


def _paths() -> dict[str, dict[str, Any]]:
    image, job = _ref("Image"), _ref("Job")
    return {
        "/api/session": {
            "post": _op("Create a user and its bearer token", "session",
                        {201: _json("The new user's token.", _ref("Session"))}, access=PUBLIC,
                errors=(429,), description="429 past RATE_LIMIT_SESSIONS_PER_MIN new "
                                           "sessions a minute from one client address."),
            "delete": _op(
                "Revoke the calling token", "session", {204: _NO_CONTENT}, errors=(409,),
                description="Later calls with this token get 401; the sockets it opened are "
                            "sent `session:revoked` and closed, in every web process. 409 for "
                            "ADMIN_TOKEN, which only the environment can change."),
        },
        "/api/images": {
            "post": _op(
                "Upload an image", "images",
                {202: _json("Stored and queued; no image work happened yet.", _ref("Upload")),
                 200: _json("The same bytes were uploaded before: that image and job "
                            "(duplicate: true); no new job.", _ref("Upload"))},
                errors=(400, 403, 413, 415, 422, 429), body=_multipart(many=False),
                description="One image in the multipart field `file`. 400 empty, missing or "
                            "malformed; 413 over MAX_UPLOAD_MB, MAX_IMAGE_PIXELS or "
                            "MAX_DECODE_MB; 415 not "
                            "a supported image; 422 damaged header; 429 rate limited."),
            "get": _op("List your images, newest first", "images",
                       {200: _json("A page of images.", _ref("ImagePage"))},
                       errors=(400, 422), parameters=_PAGE),
        },
        "/api/images/{image_id}": {
            "parameters": [_IMAGE_ID],
            "get": _op("Read an image", "images", {200: _json("The image.", image)},
                       errors=(404,)),
            "delete": _op("Delete an image and its files", "images", {204: _NO_CONTENT},
                          errors=(404,), description="A job still waiting for it ends "
                                                     "cancelled."),
        },
        "/api/images/{image_id}/{kind}": {
            "parameters": [_IMAGE_ID, _path("kind", "Which file.", enum=list(FILE_KINDS))],
            "get": _op(
                "Download an image file", "images",
                {200: {"description": "The bytes: image/webp for thumbnail and preview, the "
                                      "sniffed type for the original.",
                       "content": {"image/*": {"schema": {"type": "string",
                                                          "format": "binary"}}}}},
                errors=(403, 404, 422),
                parameters=[
                    _query("expires", "Signed links: the expiry (Unix seconds); a link "
                                      "that is not one is ignored.", {"type": "string"}),
                    _query("sig", "Signed links: the signature.", {"type": "string"}),
                ],
                description="Takes the bearer token, or the signature of a `*_url` field "
                            "instead (so a plain <img src> works): 403 when that link is "
                            "invalid or expired and no token is sent. 404 until the file "
                            "exists."),
        },
        "/api/batches": {
            "post": _op(
                "Upload several images", "batches",
                {202: _json("Each good file became a job; each refused one is an item "
                            "with its error.", _ref("BatchUpload"))},
                errors=(400, 403, 413, 429), body=_multipart(many=True),
                description="Repeated `file` fields, up to 100. A file over the size cap, "
                            "of the wrong type or damaged is refused in its item, and so is "
                            "one past the upload allowance (rate_limited, checked as each "
                            "file begins); 413 only when the whole body is over the cap or "
                            "the form fields are over MAX_FORM_FIELDS_KB, 400 past "
                            "MAX_FORM_FIELDS fields."),
        },
        "/api/batches/{batch_id}": {
            "get": _op("Read a batch and its jobs", "batches",
                       {200: _json("The batch.", _ref("Batch"))}, errors=(404,),
                       parameters=[_path("batch_id", "The batch's id.")]),
        },
        "/api/jobs": {
            "get": _op(
                "List jobs, newest first", "jobs",
                {200: _json("A page of jobs.", _ref("JobPage"))}, errors=(400, 403, 422),
                parameters=[
                    _query("state", "Only jobs in this state (delayed: queued with a "
                                    "future run_at).",
                           {"type": "string", "enum": list(COUNTED_STATES)}),
                    *_SEARCH,
                    _query("user", "Only this user's jobs (admins; a user may give their "
                                   "own id).", {"type": "string", "maxLength": MAX_NAME_CHARS}),
                    *_PAGE,
                ],
                description="Your jobs; an admin's: everyone's. Filters combine (AND); "
                            "400 invalid_filter for a malformed one."),
        },
        "/api/jobs/{job_id}": {
            "get": _op("Read a job", "jobs", {200: _json("The job as of its last event.", job)},
                       errors=(404,), parameters=[_JOB_ID]),
        },
        "/api/jobs/{job_id}/timeline": {
            "get": _op("A job's stored history", "jobs",
                       {200: _json("The job, its payload, traceback and every stored change.",
                                   _ref("Timeline"))},
                       errors=(404,), parameters=[_JOB_ID],
                       description="Owner or admin. Queue-position refreshes are not kept."),
        },
        "/api/jobs/{job_id}/cancel": {
            "post": _op("Cancel a job", "jobs",
                        {202: _json("Cancelled.", _ref("JobEnvelope"))},
                        errors=(404, 409), parameters=[_JOB_ID],
                        description="Owner or admin. 409 once the job has finished."),
        },
        "/api/jobs/{job_id}/retry": {
            "post": _op("Run a failed job again", "jobs",
                        {202: _json("Queued again under the same id, with fresh attempts.",
                                    _ref("JobEnvelope"))},
                        errors=(404, 409), parameters=[_JOB_ID],
                        description="Owners may retry failures whose error is retryable "
                                    "(409 not_retryable otherwise), admins any; 409 "
                                    "input_missing when its image was deleted, 409 conflict "
                                    "when it is not failed."),
        },
        "/api/tasks": {
            "post": _op(
                "Submit a task, or a schedule of them", "tasks",
                {202: _json("A job.", _ref("JobEnvelope")),
                 201: _json("With repeat: a schedule.", _ref("ScheduleEnvelope"))},
                errors=(400, 403, 409, 413, 422, 429),
                body=_json_body(_ref("TaskRequest"), examples=_TASK_EXAMPLES),
                description="400 not JSON, unknown type or a bad option; 422 a payload that "
                            "does not fit the type (invalid_payload, with error.fields), a "
                            "bad cron or time zone, or a cron firing more often than "
                            "SCHEDULE_MIN_INTERVAL_S (cron_too_frequent); 409 image_busy or "
                            "too_many_schedules; 429 past RATE_LIMIT_TASKS_PER_MIN, or past "
                            "HIGH_PRIORITY_PER_HOUR for priority high; 403 "
                            "priority_not_allowed (high when that is 0, or a high schedule, "
                            "for a plain user). Outgoing work: max_attempts above the type's "
                            "own (its ceiling, in GET /api/tasks/types) is cut to it, as the "
                            "job's max_attempts shows; email.send takes exactly one address in "
                            "`to` (422), a plain user may mail only EMAIL_ALLOWED_RECIPIENTS "
                            "(403 recipient_not_allowed), and at most "
                            "EMAIL_RATE_PER_USER_PER_HOUR / EMAIL_RATE_PER_HOUR e-mails an "
                            "hour (429 rate_limited); webhook.deliver is 429 "
                            "too_many_deliveries while WEBHOOK_MAX_IN_FLIGHT_PER_USER of "
                            "yours are unfinished."),
        },
        "/api/tasks/types": {
            "get": _op("List the task types", "tasks",
                       {200: _json("Every public type with its payload schema.",
                                   _ref("TaskTypes"))}),
        },
        "/api/schedules": {
            "get": _op("List your schedules", "tasks",
                       {200: _json("Your schedules.", _ref("Schedules"))}),
        },
        "/api/schedules/{schedule_id}": {
            "delete": _op("Delete a schedule", "tasks", {204: _NO_CONTENT}, errors=(404,),
                          parameters=[_path("schedule_id", "The schedule's id.")]),
        },
        "/api/webhooks": {
            "post": _op("Register a webhook", "webhooks",
                        {201: _json("Every final state of your jobs is POSTed there.",
                                    _ref("WebhookCreated"))},
                        errors=(400, 409, 413, 422),
                        body=_json_body(_ref("WebhookRequest"),
                                        example={"url": "https://example.com/darkroom"}),
                        description="422 not an http(s) URL; 409 too many webhooks."),
            "get": _op("List your webhooks", "webhooks",
                       {200: _json("Your webhooks and their signing key.", _ref("Webhooks"))}),
        },
        "/api/webhooks/{webhook_id}": {
            "delete": _op("Delete a webhook", "webhooks", {204: _NO_CONTENT}, errors=(404,),
                          parameters=[_path("webhook_id", "The webhook's id.")]),
        },
        "/api/dlq": {
            "get": _op(
                "List dead letters", "dlq",
                {200: _json("A page of failed jobs, newest first.", _ref("DeadLetterPage"))},
                access=ADMIN, errors=(400, 422),
                parameters=[*_PAGE, *_SEARCH, _USER]),
            "delete": _op("Delete every dead letter that matches", "dlq", {204: _NO_CONTENT},
                          access=ADMIN, errors=(400,), parameters=[*_SEARCH, _USER],
                          description="Without filters, every one. The jobs stay failed; "
                                      "only the entries go."),
        },
        "/api/dlq/retry": {
            "post": _op("Retry every dead letter that matches", "dlq",
                        {202: _json("What was queued again and what could not be.",
                                    _ref("DeadLetterRetry"))}, access=ADMIN, errors=(400,),
                        parameters=[*_SEARCH, _USER],
                        description="Without filters, every one."),
        },
        "/api/dlq/{job_id}/retry": {
            "post": _op("Retry one dead letter", "dlq",
                        {202: _json("Queued again under the same id.", _ref("JobEnvelope"))},
                        access=ADMIN, errors=(404, 409), parameters=[_JOB_ID],
                        description="409 input_missing when its image was deleted."),
        },
        "/api/dlq/{job_id}": {
            "delete": _op("Delete one dead letter", "dlq", {204: _NO_CONTENT}, access=ADMIN,
                          errors=(404,), parameters=[_JOB_ID]),
        },
        "/api/queues": {
            "get": _op("Queue statistics", "queues",
                       {200: _json("Every queue's counts, waits and throughput.",
                                   _ref("QueueReport"))}, access=ADMIN),
        },
        "/api/charts": {
            "get": _op("The dashboard's charts", "queues",
                       {200: _json("A point per minute, oldest first: jobs finished and "
                                   "failed, uploads, queue depth, wait, run, stage and push "
                                   "times (p50/p95); the last may be the minute still "
                                   "running, so far (partial).", _ref("Charts"))},
                       access=ADMIN, errors=(400, 422),
                       parameters=[_query("minutes", "The window, 60 by default (a day at most).",
                                          {"type": "integer", "minimum": 1,
                                           "maximum": 1440, "default": 60})]),
        },
        "/api/workers": {
            "get": _op("Worker processes", "queues",
                       {200: _json("Each worker process's threads, running jobs, memory and "
                                   "heartbeat; dead ones until WORKER_FORGET_S after their "
                                   "last report.", _ref("WorkerRoster"))}, access=ADMIN),
        },
        "/api/queues/{name}/pause": {
            "post": _op("Pause a queue", "queues",
                        {200: _json("Paused: waiting jobs stay queued, running ones finish.",
                                    _ref("QueueState"))},
                        access=ADMIN, errors=(404,), parameters=[_QUEUE]),
        },
        "/api/queues/{name}/resume": {
            "post": _op("Resume a queue", "queues",
                        {200: _json("Running again.", _ref("QueueState"))},
                        access=ADMIN, errors=(404,), parameters=[_QUEUE]),
        },
        "/api/queues/{name}/clean": {
            "post": _op(
                "Remove old finished jobs", "queues",
                {200: _json("How many were removed.", _ref("QueueCleaned"))},
                access=ADMIN, errors=(400, 404, 413, 422), parameters=[
                    _QUEUE,
                    _query("older_than_s", "Used when the body does not give it.", _AGE),
                ],
                body=_json_body(_ref("CleanRequest"), required=False,
                                example={"older_than_s": 86400}),
                description="Dead letters and images' current jobs are kept."),
        },
        "/healthz": {
            "get": _op("Health check", "operations",
                       {200: _json("Redis, the database and the event relay are up.",
                                   _ref("Health")),
                        503: _json("One of them is down.", _ref("Health"))},
                       access=PUBLIC, touches_state=False),
        },
        "/metrics": {
            "get": _op("Prometheus metrics", "operations",
                       {200: {"description": "Prometheus text format 0.0.4.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
                       access=PUBLIC, errors=(401, 403),
                       description="Open unless METRICS_TOKEN is set; then the bearer token "
                                   "must be it or an admin token (401 without, 403 for a "
                                   "plain user's)."),
        },
        "/openapi.json": {
            "get": _op("This document", "operations",
                       {200: _json("OpenAPI 3.1.", {"type": "object"})},
                       access=PUBLIC, touches_state=False),
        },
    }


def _with_invalid_values(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """400 ``invalid_value`` on every operation that looks up a path or query value.

    The database may refuse such a value outright (PostgreSQL: a NUL character).
    """
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters" or "503" not in operation["responses"]:
                continue
            if "{" in path or any(p["in"] == "query" for p in operation.get("parameters", [])):
                operation["responses"].setdefault(
                    "400", {"$ref": f"#/components/responses/{_ERRORS[400][0]}"})
                operation["responses"] = dict(sorted(operation["responses"].items()))
    return paths


def _version() -> str:
    try:
        return metadata.version("darkroom")
    except metadata.PackageNotFoundError:  # running from a checkout that was not installed
        return "0.0.0"


@functools.cache
def _document() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (name, description) in _ERRORS.items():
        responses[name] = _json(description, _ref("Error"),
                                headers=_RETRY_AFTER if status == 429 else None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Darkroom",
            "version": _version(),
            "description": "Background image processing with live progress. Live events "
                           "come over Socket.IO (path /socket.io/), described in the README. "
                           "Every error is `{\"error\": {\"code\", \"message\"}}`.",
        },
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in (
            "session", "images", "batches", "jobs", "tasks", "webhooks", "dlq", "queues",
            "operations")],
        "paths": _with_invalid_values(_paths()),
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The token from POST /api/session, or ADMIN_TOKEN."}},
            "schemas": _schemas(),
            "responses": responses,
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())
