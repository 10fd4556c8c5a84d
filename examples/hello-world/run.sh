#!/bin/bash
# A directory job: qsub -N hello-world examples/hello-world
# The whole directory is zipped, unpacked on a worker, and run.sh runs inside it.
echo "hello from $(hostname) as job $PBS_JOBID"
cat greeting.txt
wc -w < greeting.txt > words.txt
