# hpctrain: the two commands of the README are `make demo` and `make test`.
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data/fashion-mnist.h5
FASHION_SRC ?= /usr/share/datasets/fashion-mnist
NODES  ?= 2

.PHONY: install install-system demo test test-fast bench docs accuracy studies projection cluster-checks soak lint cluster-up cluster-down clean

install-system:  ## Debian packages for a laptop/CI (skip on a real cluster: module load)
	bash env/install-system.sh

install: install-system  ## the pinned venv (Horovod built from source); a no-op when current
	bash env/install.sh

$(DATA): | install
	$(BIN)/hpctrain stage fashion-mnist --source $(FASHION_SRC) --out $(DATA)

cluster-up: install
	$(BIN)/hpctrain cluster up

cluster-down:
	@if [ -x $(BIN)/hpctrain ]; then $(BIN)/hpctrain cluster down; fi

demo: install cluster-up $(DATA)  ## Fashion-MNIST CNN, 2 ranks on 2 nodes of the embedded cluster
	$(BIN)/hpctrain submit --config jobs/configs/fmnist_cnn.yaml:demo --nodes $(NODES) \
	  --ntasks-per-node 1 --wait

test: install  ## the whole suite on real parts (brings up its own Slurm cluster)
	$(BIN)/python -m pytest -ra --durations=25

test-fast: install  ## the inner loop: no Slurm, no MPI ranks, nothing marked slow
	$(BIN)/python -m pytest -ra --durations=10 -m "not slurm and not mpi and not slow"

lint: install  ## ruff over src, tests and scripts; mypy over the package
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy  # over src/hpctrain, configured in pyproject.toml

clean: cluster-down
	rm -rf .cluster

BENCH_TREE := data/bench-tree
$(BENCH_TREE): | install
	$(BIN)/python scripts/make_imagefolder.py --out $@ --train 2000 --val 400
data/fmnist-tree: | install
	$(BIN)/python scripts/make_imagefolder.py --out $@
STAGE_BENCH = $(BIN)/hpctrain stage imagefolder --source $(BENCH_TREE) --size 256 --shards 4 \
	  --max-unreadable 0.01
data/bench-256/manifest.json: | $(BENCH_TREE)
	$(STAGE_BENCH) --out $(@D)
data/bench-256-lzf/manifest.json: | $(BENCH_TREE)
	$(STAGE_BENCH) --out $(@D) --compression lzf

data/fmnist-tree-12k: | install  # 12,000 training and all 10,000 test images as an image tree
	$(BIN)/python scripts/make_imagefolder.py --out $@ --train 12000 --val 0
data/fmnist-tree-56/manifest.json: | data/fmnist-tree-12k  # the recipe ablation's 48 px crops
	$(BIN)/hpctrain stage imagefolder --source data/fmnist-tree-12k --size 56 --out $(@D)
data/fmnist-tree-12k-32/manifest.json: | data/fmnist-tree-12k  # the large-batch study's 28 px crops
	$(BIN)/hpctrain stage imagefolder --source data/fmnist-tree-12k --size 32 --out $(@D)

JPEG_TREE := data/bench-jpeg-tree
$(JPEG_TREE): | install
	$(BIN)/python scripts/make_imagefolder.py --out $@ --train 2400 --val 480 \
	  --short-side 333-375 --quality 90-90 --grain 6

bench: install $(DATA) data/bench-256/manifest.json data/bench-256-lzf/manifest.json $(JPEG_TREE)  ## every benchmark (trainer, input, Horovod, time to accuracy, jobs, startup, determinism, staging)
	$(BIN)/python -m hpctrain.bench --data $(DATA) --images data/bench-256 \
	  --images-lzf data/bench-256-lzf --jpeg-tree $(JPEG_TREE) --rounds 5 --processes 5 --out results/benchmarks

docs: install  ## render every benchmark figure and the README's tables again from results/ JSON (runs nothing)
	$(BIN)/python -m hpctrain.bench --render
	python3 scripts/slow_machine.py render
	$(BIN)/python scripts/cluster_checks.py render

accuracy: install cluster-up $(DATA)  ## every model config, 1 and 2 ranks, -> results/accuracy/README.md
	bash scripts/accuracy_table.sh

studies: install cluster-up $(DATA) data/fmnist-tree-56/manifest.json data/fmnist-tree-12k-32/manifest.json  ## the committed studies -> results/studies/, the recipe ablation -> results/accuracy/studies/ (resumable)
	bash scripts/run_studies.sh
	for s in fmnist_cnn-strong fmnist_cnn-weak synthetic_resnet20-strong synthetic_resnet20-weak; do \
	  $(BIN)/hpctrain project --study results/studies/$$s --gpus 1,2,4 --gpus-per-node 1 \
	    --network results/network/embedded/allreduce.json \
	    --out results/studies/$$s/projection.md >/dev/null; done

network: install cluster-up  ## allreduce through Horovod on 1, 2 and 4 nodes of the embedded cluster -> results/network/embedded/
	rm -rf results/network/embedded
	$(BIN)/hpctrain bench allreduce --nodes 1,2,4 --out results/network/embedded

cluster-checks: install cluster-up  ## what `hpctrain profile init` and `doctor` print here, healthy and broken -> docs/clusters.md
	$(BIN)/python scripts/cluster_checks.py run
	$(BIN)/python scripts/cluster_checks.py render

soak: install cluster-up $(DATA)  ## a 2-node run hit by 20 random faults must end with the uninterrupted run's weights -> results/reliability/ (~30 min)
	$(BIN)/python scripts/soak.py run --seed $${SEED:-1} --faults $${FAULTS:-20}

projection: install  ## the cost model checked against published figures -> results/projection/
	$(BIN)/hpctrain project --published --out results/projection >/dev/null
