#!/usr/bin/env bash
# The accuracy table: every Fashion-MNIST config of jobs/configs/ on 2 ranks (2 logical nodes,
# 1 CPU each) and on 1 rank (1 node, 2 CPUs), submitted to the embedded Slurm cluster, plus
# the synthetic ImageNet-style configs (:short); then one table written by `hpctrain report`.
#
#   make accuracy                                  # all of them (about an hour on 2 cores)
#   scripts/accuracy_table.sh fmnist_softmax       # only these configs
#   scripts/accuracy_table.sh fmnist_cnn:workshop  # a variant (runs/fmnist_cnn-workshop)
#
# Runs land in results/accuracy/runs/<config>/<N>rank; a run whose report.json exists is kept,
# so an interrupted table resumes. Needs the embedded cluster (make cluster-up) and the data.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=results/accuracy
if [ $# -gt 0 ]; then configs=("$@"); else
  # one config per zoo model: not the image-tree config (its own data, 20 min) nor the
  # large-batch one (its study, results/studies/fmnist_cnn-large-batch, is its table); and
  # the workshop CNN trained as the workshops teach it (Adadelta 1.0, 12 epochs)
  configs=($(cd jobs/configs && ls fmnist_*.yaml synthetic_*.yaml | sed 's/\.yaml$//' \
    | grep -v -e '^fmnist_tree_' -e '_large_batch$') fmnist_cnn:workshop)
fi
for entry in "${configs[@]}"; do
  name=${entry/:/-}  # fmnist_cnn:workshop runs in runs/fmnist_cnn-workshop
  spec=jobs/configs/${entry%%:*}.yaml
  [ "$entry" = "${entry%%:*}" ] || spec=$spec:${entry#*:}
  case $name in synthetic_*) spec=$spec:short ;; esac
  for ranks in 2 1; do
    dir=$OUT/runs/$name/${ranks}rank
    if [ -f "$dir/report.json" ]; then echo "keep $dir"; continue; fi
    rm -rf "$dir"
    if [ "$ranks" = 2 ]; then shape=(--nodes 2 --ntasks-per-node 1 --cpus-per-task 1)
    else shape=(--nodes 1 --ntasks-per-node 1 --cpus-per-task 2); fi
    echo "== $name on $ranks rank(s)"
    "$BIN/hpctrain" submit --config "$spec" "${shape[@]}" --time 01:30:00 --run-dir "$dir" \
      --wait | tail -n 3
  done
done
"$BIN/hpctrain" report --table "$OUT/README.md" "$OUT"/runs/*/*rank
