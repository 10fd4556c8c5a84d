"""Job dependencies (qsub -W depend=...): when is one met, when can it never be."""

from __future__ import annotations

from pkbs.models import JobRecord
from pkbs.states import JobState, is_final

SUPPORTED = ("after", "afterok", "afternotok", "afterany")
STARTED = frozenset({JobState.RUNNING, JobState.EXITING, JobState.BEGUN})


def outcome(kind: str, parent: JobRecord) -> bool | None:
    """True: met; False: can never be met; None: not yet known. An array parent
    counts as started once it is begun, and succeeded if every subjob did."""
    ran = parent.run_count > 0 or parent.stime is not None
    if kind == "after":
        if parent.state in STARTED or (is_final(parent.state) and ran):
            return True
        return False if is_final(parent.state) else None
    if not is_final(parent.state):
        return None
    succeeded = ran and parent.exit_status == 0
    if kind == "afterok":
        return succeeded
    if kind == "afternotok":
        return not succeeded
    return True  # afterany
