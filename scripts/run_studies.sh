#!/usr/bin/env bash
# The committed studies (results/studies/, and the recipe ablation in
# results/accuracy/studies/), one `hpctrain study` command each, run
# one after another on the embedded cluster (`make studies`). Each is resumable: rerun this
# script and only runs without a completed report are submitted again.
set -euo pipefail
bin="${VENV:-.venv}/bin"
"$bin/hpctrain" study --config jobs/configs/fmnist_cnn.yaml:study --nodes 1,2,4 \
  --mode strong --repeats 2 --name fmnist_cnn-strong
"$bin/hpctrain" study --config jobs/configs/fmnist_cnn.yaml:study --nodes 1,2,4 \
  --mode weak --repeats 2 --name fmnist_cnn-weak
"$bin/hpctrain" study --config jobs/configs/synthetic_resnet20.yaml:study --nodes 1,2,4 \
  --mode strong --repeats 3 --name synthetic_resnet20-strong
"$bin/hpctrain" study --config jobs/configs/synthetic_resnet20.yaml:study --nodes 1,2,4 \
  --mode weak --repeats 3 --name synthetic_resnet20-weak
# Accuracy at scale: global batches 128 to 4,096 emulated on 2 ranks with gradient
# accumulation, linear learning-rate scaling with and without a 1-epoch warm-up.
"$bin/hpctrain" study --config jobs/configs/fmnist_cnn_large_batch.yaml --nodes 2 \
  --mode batch --global-batches 128,512,1024,2048,4096 --name fmnist_cnn-large-batch
# The ImageNet recipe's parts, each dropped in turn, on ResNet-20 at 48 px (2 seeds each).
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree48_resnet20_recipe.yaml --nodes 2 --mode variants \
  --variants base,no_weight_decay,no_random_resized_crop,no_label_smoothing,no_zero_init,none \
  --repeats 2 --name recipe-ablation
# Large global batches by method: momentum SGD with linear scaling and warm-up, LARS and LAMB,
# each at global batches 64 (the base), 1,024 (16x) and 2,048 (32x), ResNet-20 at 28 px.
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lars,lamb --global-batches 64,1024,2048 --repeats 2 --name large-batch-methods
# The same methods at twice the epochs (16), at the base and at 16x its global batch.
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lars,lamb --global-batches 64,1024 --repeats 2 \
  --name large-batch-methods-16ep epochs=16
# A rate sweep at 16x: LAMB at its rate, twice it and four times it, 3 seeds, against the base
# alone (SGD at global batch 64), 16 epochs.
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lamb,lamb_lr2x,lamb_lr4x --global-batches 64,1024 --base-alone --repeats 3 \
  --name large-batch-lamb-rates-16ep epochs=16
# How large a batch the base's gradients can use: the base's seed-42 run again with every
# epoch's checkpoint kept, its gradient noise scale at each, shown in the sweep's README.
sweep=results/accuracy/studies/large-batch-lamb-rates-16ep
if [ ! -f "$sweep/noise_scale.json" ]; then
  rm -rf "$sweep/noise-scale-base"
  "$bin/hpctrain" submit --config jobs/configs/tree28_resnet20_large_batch.yaml:sgd --nodes 2 \
    --run-dir "$sweep/noise-scale-base" --wait epochs=16 checkpoint_keep=0 seed=42
  "$bin/hpctrain" noise-scale --run "$sweep/noise-scale-base" --all --batches 64
  cp "$sweep/noise-scale-base/noise_scale.json" "$sweep/noise_scale.json"
  HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
    --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
    --variants sgd,lamb,lamb_lr2x,lamb_lr4x --global-batches 64,1024 --base-alone \
    --repeats 3 --name large-batch-lamb-rates-16ep --report-only epochs=16
fi
# Below 16x: LAMB (its own rate) at 4x and 8x the base's global batch, 3 seeds, 16 epochs; the
# base's noise scale measured above is shown here too.
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lamb --global-batches 64,256,512 --base-alone --repeats 3 \
  --name large-batch-lamb-4x-8x-16ep epochs=16
below=results/accuracy/studies/large-batch-lamb-4x-8x-16ep
if [ ! -f "$below/noise_scale.json" ]; then
  cp "$sweep/noise_scale.json" "$below/noise_scale.json"
  HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
    --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
    --variants sgd,lamb --global-batches 64,256,512 --base-alone --repeats 3 \
    --name large-batch-lamb-4x-8x-16ep --report-only epochs=16
fi
# A longer budget, the same form: the base and LAMB at 16x, 32 epochs, 10 seeds (run with 3,
# then 7, then 10 as each report asked: three looks, which its plan.json records and its
# verdict's interval is widened for).
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lamb --global-batches 64,1024 --base-alone --repeats 10 \
  --name large-batch-lamb-32ep epochs=32
# Beyond 16x at the same budget: LAMB at 32x (2,048), 3 seeds, against the base.
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode batch \
  --variants sgd,lamb --global-batches 64,2048 --base-alone --repeats 3 \
  --name large-batch-lamb-32x-32ep epochs=32
# Is the base still gaining at that budget? The base at 32 and at 64 epochs, seed by seed
# (its 32-epoch seeds are the studies' above, trained again).
HPCTRAIN_RESULTS=results/accuracy "$bin/hpctrain" study \
  --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 --mode variants \
  --variants budget_32ep,budget_64ep --repeats 2 --time 00:45:00 \
  --name large-batch-base-budget
