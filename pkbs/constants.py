"""Every name pkbs uses on the wire: streams, buckets, subjects, keys, headers.

Nothing here imports anything; the CLI, dispatcher and worker all read it.
"""

from __future__ import annotations

# JetStream stream holding one message per submission. Its sequence number is the
# job's number, and `Nats-Msg-Id` (the client's submit id) makes a retried submit
# return the same number. The message body is the job's zipped payload.
SUBMIT_STREAM = "PKBS_SUBMIT"
SUBMIT_SUBJECT = "pkbs.submit"

# JetStream work-queue stream: one small message per runnable job, consumed by workers.
WORK_STREAM = "PKBS_WORK"
WORK_SUBJECT_PREFIX = "pkbs.work"  # pkbs.work.<queue>.<number>[.<index>]
WORKER_CONSUMER = "workers"

# KV bucket with one record per job (key: JOB_KEY_PREFIX + number).
JOBS_BUCKET = "PKBS_JOBS"
JOB_KEY_PREFIX = "j."
# Every change of a record is a message on this prefix + its key (`$KV.PKBS_JOBS.j.12`):
# a core NATS subscription there hears each change as it is stored.
JOBS_SUBJECT_PREFIX = f"$KV.{JOBS_BUCKET}."

# KV bucket mapping sha256(token) -> identity (user, role, expiry).
TOKENS_BUCKET = "PKBS_TOKENS"

# KV bucket of job definitions (pkbs/definitions.py): one key per version,
# DEFINITION_KEY_PREFIX + <name>.<version>.
DEFINITIONS_BUCKET = "PKBS_DEFS"
DEFINITION_KEY_PREFIX = "d."

# KV bucket of the live workers (pkbs/nodes.py): one key per worker,
# NODE_KEY_PREFIX + <worker name>, expiring unless its worker renews it.
NODES_BUCKET = "PKBS_NODES"
NODE_KEY_PREFIX = "n."

# Core NATS subjects.
# pkbs.signal.<number>: tell the worker running the job to signal it. The body is a
# signal name (qsig), or KILL_REQUEST (qdel: SIGTERM, then SIGKILL after the grace).
SIGNAL_SUBJECT_PREFIX = "pkbs.signal"
KILL_REQUEST = "qdel"
RERUN_REQUEST = "qrerun"  # kill the run and queue the job again

# Headers.
MSG_ID_HEADER = "Nats-Msg-Id"
# GET /v1/jobs/{id}/payload: how the payload is to be laid out (a job pod's init).
PAYLOAD_FORMAT_HEADER = "X-Pkbs-Payload-Format"  # "zip" or "file"
ENTRYPOINT_HEADER = "X-Pkbs-Entrypoint"  # a "file" payload's name

# Payload limits. The zipped payload may be 1 MiB; NATS max_payload must leave room
# for headers and the message envelope on top of that.
MAX_PAYLOAD_BYTES = 1024 * 1024
NATS_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
# The HTTP body carries the payload base64-encoded inside JSON.
MAX_SUBMIT_BODY_BYTES = MAX_PAYLOAD_BYTES * 4 // 3 + 256 * 1024
# POST /v1/jobs/batch: at most this many jobs, within the same body limit.
MAX_BATCH_JOBS = 1000

# Environment variables the CLI reads (the server side uses pkbs.settings).
ENV_HOME = "PKBS_HOME"
ENV_ENDPOINT = "PKBS_ENDPOINT"
ENV_TOKEN = "PKBS_TOKEN"

DEFAULT_SERVER_NAME = "pkbs"
DEFAULT_QUEUE = "workq"
API_PREFIX = "/v1"
