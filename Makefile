# The two commands a person needs:
#   make demo   set up, build, and run the whole mesh with the sample data
#   make test   set up, build, and run every test (then again under ASan+UBSan)
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONFIG     ?= configs/qmesh.cfg

.PHONY: all build setup test test-fast test-asan demo bench clean help

all: build

help:
	@sed -n '2,3p' Makefile | sed 's/^# *//'
	@echo "other targets: build, test-fast (no sanitizer pass), test-asan, bench, clean"

setup:
	@scripts/setup

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test-fast: setup build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQMESH_SANITIZE=ON

test-asan: setup $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  QMESH_SANITIZED=1 ctest --output-on-failure -j 2 --timeout 900

test: test-fast test-asan

demo: setup build
	BUILD=$(BUILD) CONFIG=$(CONFIG) scripts/demo

bench: setup build
	@for b in $(BUILD)/bench/*_bench; do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
