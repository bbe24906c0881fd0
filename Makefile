# The front door: every install step and every task, each a thin call into the package.
#   make segment IN=./scans OUT=./masks     segment a folder (base install: ONNX Runtime, no torch)
#   make test                               install test deps and run the test suite
#   make train                              train the documented default model (three stages)
#   make engine                             export the shipped checkpoint to ONNX, its gated INT8 variant (+ TensorRT if present)
#   make bench                              write BENCHMARKS.md (accuracy and speed, this machine)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch that lies on this machine's disk; installed before the package so
# the package's torch range never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DATA   ?= $(or $(VESSELSEG_DATA),../shared/data)
IN     ?= ./scans
OUT    ?= ./masks
ARGS   ?=
RUN    ?= runs/default

.PHONY: install install-dev segment test test-fast train train-v2 train-report engine bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The CPU runtime; a GPU user runs `pip install '.[gpu]'` instead (README, "GPU install").
$(VENV)/.base: $(PY) pyproject.toml
	$(PIP) install -q -e ".[cpu]"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[cpu,export,test,dicom,ray]"
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

segment: $(VENV)/.base
	$(VENV)/bin/vesselseg segment "$(IN)" --out "$(OUT)" $(ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest -q $(ARGS)

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# The shipped default model, three stages (see MODEL_CARD.md for the time and hardware they took):
# train from scratch, fine-tune with DRIVE-512-style re-packaged copies, then a warm restart of
# the learning rate on the same data. Install the result with
# `$(PY) -m train.ship $(RUN)-restart/best.pt` and `make engine`.
train: $(VENV)/.dev
	$(PY) -m train --config train/configs/default.toml --data $(DATA)/DRIVE --data $(DATA)/CHASE_DB1 --out $(RUN) $(ARGS)
	$(PY) -m train --config train/configs/finetune512.toml --init $(RUN)/best.pt --data $(DATA)/DRIVE --data $(DATA)/CHASE_DB1 --out $(RUN)-512 $(ARGS)
	$(PY) -m train --config train/configs/restart512.toml --init $(RUN)-512/best.pt --data $(DATA)/DRIVE --data $(DATA)/CHASE_DB1 --out $(RUN)-restart $(ARGS)

# Model v2 candidate (issue 15, not shipped): multi-scale fine-tune of the shipped model on
# DRIVE + CHASE_DB1 + HRF's training split (MODEL_CARD.md, "Model v2"); resume with
# ARGS="--resume $(RUN)-v2/last.pt".
train-v2: $(VENV)/.dev
	$(PY) -m train --config train/configs/multiscale.toml --init vesselcli/models/default.pt --data $(DATA)/DRIVE --data $(DATA)/CHASE_DB1 --data $(DATA)/HRF --out $(RUN)-v2 $(ARGS)

# The report's configuration (64 base channels, depth 4, valid convolutions, BCE, Adam 1e-4, batch 4).
train-report: $(VENV)/.dev
	$(PY) -m train --config train/configs/report.toml --data $(DATA)/DRIVE --out runs/report $(ARGS)

engine: $(VENV)/.dev
	$(VENV)/bin/vesselseg export --update-shipped --data $(DATA) $(ARGS)

bench: $(VENV)/.dev
	$(PY) -m bench --data $(DATA) $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
