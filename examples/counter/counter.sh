#!/usr/bin/env bash
#PBS -N counter
#PBS -l select=1:ncpus=1
#PBS -l walltime=00:05:00
#
# The counter demo: every job adds one to COUNT and, while the count is below
# LIMIT, submits the next job of the chain with qsub -- from inside the job.
# Start it with:  qsub -v COUNT=0,LIMIT=5 examples/counter/counter.sh
#
# Inside a job, qsub/qstat need no set-up: the worker gives every job
# PKBS_ENDPOINT and a PKBS_TOKEN that is valid only while the job runs, and the
# new job belongs to the same user.
set -euo pipefail

count=$(( ${COUNT:-0} + 1 ))
limit=${LIMIT:-5}

echo "job $PBS_JOBID in $PBS_O_WORKDIR: count $count of $limit"
if (( count < limit )); then
    cd "$PBS_O_WORKDIR"
    # "$0" is this script, unpacked on the worker; qsub sends it again.
    next=$(qsub -N "${PBS_JOBNAME:-counter}" -v "COUNT=$count,LIMIT=$limit" "$0")
    echo "submitted $next"
else
    echo "final count: $count"
fi
