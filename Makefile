# vtemu: everything a fresh machine needs is bootstrapped here.
#   make demo   creates .venv, installs vtemu, assembles firmware + guests, boots guests/hello
#   make test   the same set-up, then the test suite (parallel, QEMU differential tests included
#               when qemu-system-x86_64 is installed)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
VTEMU  := $(BIN)/vtemu
BUILD  := build
GUEST_SOURCES := $(wildcard guests/*.S)
GUEST_IMAGES  := $(patsubst guests/%.S,$(BUILD)/guests/%.bin,$(GUEST_SOURCES))
# Guests written with guests/include/pvops.inc (or vmbus.inc) also get their enlightened
# build, NAME.pv.bin.
PV_SOURCES    := $(shell grep -l -e 'pvops.inc' -e 'vmbus.inc' $(GUEST_SOURCES))
PV_IMAGES     := $(patsubst guests/%.S,$(BUILD)/guests/%.pv.bin,$(PV_SOURCES))
FIRMWARE      := $(BUILD)/firmware/vtemu-fw.bin
INCLUDES      := $(wildcard guests/include/*.inc)
# Benchmark guests (benchmarks/*.S, `vtemu bench`), assembled into build/benchmarks/.
BENCH_SOURCES := $(wildcard benchmarks/*.S)
BENCH_IMAGES  := $(patsubst benchmarks/%.S,$(BUILD)/benchmarks/%.bin,$(BENCH_SOURCES))

.PHONY: all demo test test-fast venv firmware guests benchmark-guests bench clean

all: firmware guests

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

firmware: $(FIRMWARE)

$(FIRMWARE): firmware/vtemu-fw.S $(VENV)/.installed
	$(VTEMU) asm --rom $< -o $@

guests: $(GUEST_IMAGES) $(PV_IMAGES)

$(BUILD)/guests/%.pv.bin: guests/%.S $(INCLUDES) $(VENV)/.installed
	$(VTEMU) asm --pv $< -o $@

$(BUILD)/guests/%.bin: guests/%.S $(INCLUDES) $(VENV)/.installed
	$(VTEMU) asm $< -o $@

demo: firmware guests
	$(VTEMU) run $(BUILD)/guests/hello.bin --stats

test: firmware guests
	$(BIN)/python -m pytest -n auto -q

test-fast: firmware guests
	$(BIN)/python -m pytest -n auto -q -m "not slow and not differential"

benchmark-guests: $(BENCH_IMAGES)

$(BUILD)/benchmarks/%.bin: benchmarks/%.S $(INCLUDES) $(VENV)/.installed
	$(VTEMU) asm $< -o $@

bench: firmware guests benchmark-guests
	$(VTEMU) bench

clean:
	rm -rf $(BUILD)
