"""Job-scoped credentials: signed, self-expiring tokens a job uses to call qsub/qstat.

A worker mints one when a job starts; the dispatcher verifies the signature with
the shared secret and that the job is still running. No KV write per job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

PREFIX = "pkbsjob."


def mint(secret: str, user: str, job: int, expires: float) -> str:
    body = base64.urlsafe_b64encode(
        json.dumps({"u": user, "j": job, "e": int(expires)}, separators=(",", ":")).encode()
    ).decode()
    return f"{PREFIX}{body}.{_sign(secret, body)}"


def verify(secret: str, token: str) -> tuple[str, int] | None:
    """The (user, job) a valid, unexpired job token stands for; None otherwise."""
    if not token.startswith(PREFIX):
        return None
    body, _, signature = token[len(PREFIX) :].rpartition(".")
    if not body or not hmac.compare_digest(signature, _sign(secret, body)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
        user, job, expires = str(data["u"]), int(data["j"]), float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < time.time():
        return None
    return user, job


def _sign(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
