#!/usr/bin/env bash
# The tour `make demo` runs: start the local stack, submit the three kinds of job,
# show qstat, fetch a result.
set -euo pipefail
examples=$(cd "$(dirname "$0")" && pwd)
# As in PBS, each job's .o/.e also land in the directory it was submitted from: this one.
work=$(mktemp -d)
cd "$work"

echo "==> pkbs up"
pkbs up

echo "==> submitting: a script on stdin, an executable file, a directory"
j1=$(echo "sleep 1; echo slept" | qsub -N sleep)
j2=$(qsub -N calc "$examples/calculation/calc.sh")
j3=$(qsub -N hello-world "$examples/hello-world")
echo "$j1 $j2 $j3"

echo "==> qstat"
qstat

for j in "$j1" "$j2" "$j3"; do
  until qstat -x -f "$j" | grep -q "job_state = F"; do sleep 0.2; done
done
echo "==> qstat -x (finished jobs too)"
qstat -x
echo "==> their .o/.e, delivered to the submit directory $work: $(ls "$work" | tr '\n' ' ')"

out=$(mktemp -d)
echo "==> pkbs fetch $j3 $out"
pkbs fetch "$j3" "$out"
echo "--- $(ls "$out" | tr '\n' ' ')"
cat "$out"/hello-world.o*

cat <<MSG

The stack is still running. To go on:
  source .venv/bin/activate
  echo hostname | qsub -N hi      # submit; prints the job id
  qstat -x                        # see every job, finished ones too
  pkbs fetch <job id> [dir]       # download its results
  pkbs status                     # processes of the local stack
  pkbs down                       # stop it (jobs and history are kept)
MSG
