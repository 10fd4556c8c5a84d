#!/bin/bash
#PBS -N step
#PBS -l walltime=00:05:00
# One step of a dependency chain: it runs only once the step before it succeeded.
echo "step ${STEP:-?} ran as $PBS_JOBID at $(date +%T.%N)"
