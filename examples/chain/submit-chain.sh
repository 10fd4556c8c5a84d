#!/usr/bin/env bash
# A dependency chain: extract -> compute -> report, each step waiting for the one
# before it to succeed (qsub -W depend=afterok:<id>). Prints the three job ids.
# If a step fails, the steps after it can never run and are deleted, as in PBS.
set -euo pipefail
here=$(dirname "$0")
first=$(qsub -N extract -v STEP=1 "$here/step.sh")
second=$(qsub -N compute -v STEP=2 -W depend=afterok:"$first" "$here/step.sh")
third=$(qsub -N report -v STEP=3 -W depend=afterok:"$second" "$here/step.sh")
echo "$first $second $third"
