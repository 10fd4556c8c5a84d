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
# KV bucket of the server's configuration (pkbs/configstore.py): `server` (attributes
# and queues, what qmgr sets) and HOOK_KEY_PREFIX + <name> (one per hook).
CONFIG_BUCKET = "PKBS_CONFIG"
CONFIG_SERVER_KEY = "server"  # its key of the ServerConfig (pkbs/configstore.py)
HOOK_KEY_PREFIX = "hook."

# KV bucket of the running jobs that run limits count (pkbs/runledger.py): one key per
# ledger, `u.<user>` or `all` (pkbs/limits.py: ledger_key).
RUNNING_BUCKET = "PKBS_RUNNING"

# JetStream stream of running jobs' live output (worker/outputfeed.py), in memory and
# bounded (pkbs/jobstore.py ensure_layout): subjects
# pkbs.output.<number>[.<index>].<stdout|stderr>, one message per chunk a worker read
# from the job's file; an empty message with OUTPUT_END_HEADER ends a run's output.
OUTPUT_STREAM = "PKBS_OUTPUT"
OUTPUT_SUBJECT_PREFIX = "pkbs.output"
OUTPUT_STREAMS = ("stdout", "stderr")
OUTPUT_END_HEADER = "Pkbs-Output-End"

# Core NATS subjects.
# pkbs.watch.<number>[.<index>]: a request to the worker running the job to publish its
# output (for a lease of OUTPUT_WATCH_LEASE seconds, renewed by the watcher); the reply
# is {"ok": true} once what the job wrote so far is in PKBS_OUTPUT, else {"error": ...}.
OUTPUT_WATCH_PREFIX = "pkbs.watch"
OUTPUT_WATCH_LEASE = 20.0

# pkbs.signal.<number>: tell the worker running the job to signal it. The body is a
# signal name (qsig), or KILL_REQUEST (qdel: SIGTERM, then SIGKILL after the grace).
SIGNAL_SUBJECT_PREFIX = "pkbs.signal"
# pkbs.adopt.<worker name>: a request to the worker running a job to take over a new
# delivery of its work message (the consumers were arranged again: worker/service.py).
# The body is the run token; the reply subject of that delivery rides in a header.
ADOPT_SUBJECT_PREFIX = "pkbs.adopt"
ADOPT_REPLY_HEADER = "Pkbs-Ack-Subject"
KILL_REQUEST = "qdel"
RERUN_REQUEST = "qrerun"  # kill the run and queue the job again
# The running job's record changed (suspended, resumed, a new walltime): its worker
# reads it again and does what it says. (Its heartbeat reads it too, if this is lost.)
CHANGED_REQUEST = "changed"

# Headers.
MSG_ID_HEADER = "Nats-Msg-Id"
# On a work message a worker gave back as a copy (worker/service.py): the stream
# sequence of the message it copies, which is the one a running job's record names.
WORK_SEQ_HEADER = "Pkbs-Work-Seq"
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
