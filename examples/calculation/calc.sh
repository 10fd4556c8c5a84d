#!/bin/bash
#PBS -N calc
#PBS -l walltime=00:05:00
# An executable file submitted as the job itself: qsub examples/calculation/calc.sh
echo "sum of 1..100 = $(seq 1 100 | paste -sd+ | bc 2>/dev/null || python3 -c 'print(sum(range(101)))')"
echo "result $(( 6 * 7 ))" > answer.txt
