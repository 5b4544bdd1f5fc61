# The README's two commands. Both install what they need first (scripts/setup.sh
# is idempotent and skips apt when everything is present).
BUILD ?= build
JOBS ?= $(shell nproc)
# OpenMP threads that spin while waiting stall LibTorch 10-30x when the cores
# are shared (bench/results/trainer_ompdefault.txt); passive waiting avoids it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all setup setup-plots configure build test demo experiments bench clean compose-trial

all: build

setup:
	bash scripts/setup.sh

setup-plots:
	bash scripts/setup.sh --plots

configure: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The federated demo: strategic selection vs the `top` baseline, 20 clients,
# per-round progress, then runs/demo/results.md and plots. Starts afresh.
demo: build setup-plots
	rm -rf runs/demo
	./$(BUILD)/bin/layerfl-experiments --grid configs/demo_grid.yaml --rounds
	@echo; echo "strategic selection vs the top baseline (runs/demo/results.md, plots in runs/demo/):"
	@sed -n '/^| strategy/,/^$$/p' runs/demo/results.md

# The paper-style comparison (81 runs), every strategy and the local-only
# baseline at equal real cost in layers, seconds and MiB on heterogeneous
# devices (165 runs), and the lambda sweep (54 runs): ~80 min with --jobs 2 on
# 2 cores; resumable.
experiments: build setup-plots
	./$(BUILD)/bin/layerfl-experiments --grid configs/experiments/paper.yaml --jobs 2
	./$(BUILD)/bin/layerfl-experiments --grid configs/experiments/budgets.yaml --jobs 2
	./$(BUILD)/bin/layerfl-experiments --grid configs/experiments/lambda.yaml --jobs 2

bench: build
	bash bench/run_all.sh $(BUILD)

clean:
	rm -rf $(BUILD)

# deploy/docker-compose.yml for real (a Docker engine, no registry needed): the
# base images from Debian's packages, the image, the coordinator and 8 clients
# as containers with their own memory and CPU limits, a killed client, a
# restarted coordinator and a cut link; every round must commit.
compose-trial: setup
	bash deploy/compose_trial.sh
