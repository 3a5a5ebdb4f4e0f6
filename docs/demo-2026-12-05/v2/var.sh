#!/bin/bash
# var.sh RUN : baseline and distilled students with two more student seeds, on the run's hard annotations
D=$1
for ss in 101 102; do
  ./stud.sh $D base-$ss $ss train
  ./stud.sh $D dist-$ss $ss distill --annotations $D/annotations
done
