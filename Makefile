# The README's two commands. Both install what they need first (scripts/setup.sh
# is idempotent and skips apt when everything is present).
BUILD ?= build
CONFIG ?= configs/demo.yaml
JOBS ?= $(shell nproc)
# OpenMP threads that spin while waiting stall LibTorch 10-30x when the cores
# are shared (bench/results/trainer_ompdefault.txt); passive waiting avoids it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all setup configure build test demo bench clean

all: build

setup:
	bash scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	./$(BUILD)/bin/layerfl-finetune --config $(CONFIG)

bench: build
	bash bench/run_all.sh $(BUILD)

clean:
	rm -rf $(BUILD)
