"""Where things are inside a job's pod, shared by the worker that makes the pod
(worker/pods.py) and the programs that run in it (podinit, podkeeper). Standard
library only: the pod's helpers import it first thing.

The control directory is an emptyDir of its own, mounted in every container of the
pod at CONTROL_DIR; the job's files are in its job directory, another emptyDir.
"""

from __future__ import annotations

CONTROL_DIR = "/pkbs"
# In the control directory:
STDOUT = "stdout"  # the job's stdout and stderr, when a POSIX shell runs the job
STDERR = "stderr"
NODEFILE = "nodefile"  # PBS_NODEFILE: the pod's host name once per CPU
BEFORE = "before.json"  # the job directory as the payload left it (payload.snapshot)
USAGE = "usage.json"  # what the job's processes used, sampled by the keeper

# Exit statuses of the init container (podinit) besides 0.
EXIT_PAYLOAD_REFUSED = 2  # the payload cannot be unpacked: the job cannot start
EXIT_PAYLOAD_NOT_FETCHED = 3  # the dispatcher did not give it: tried again later
