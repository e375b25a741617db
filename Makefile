# lmrec: `make run` serves real recommendations, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUNDLE ?= artifacts/minilm-zeroshot
TRAINED ?= artifacts/lmrec-ml100k
# The CPU build of torch: a plain `torch` requirement would pull multi-GB CUDA wheels. Where no local
# wheel exists, add `--index-url https://download.pytorch.org/whl/cpu` via TORCH_PIP_ARGS.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test unit integration protos lint-protos bundle train evaluate bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[all]"
	@if command -v npm >/dev/null 2>&1; then (cd clients/node && npm ci --no-audit --no-fund --silent); \
	 else echo "npm not found: the Node client test will be skipped"; fi
	touch $@

bundle: $(BUNDLE)/manifest.json

$(BUNDLE)/manifest.json: | install
	$(BIN)/lmrec export-encoder --out $(BUNDLE)

# The fine-tuned LM recommender (ML-100K from $$LMREC_DATA or ../shared/data/ml-100k; ~11 min on 2 cores,
# once). A running `make run` hot-swaps to a bundle retrained into the same folder.
train: $(TRAINED)/manifest.json

$(TRAINED)/manifest.json: | install
	$(BIN)/lmrec train --out $(TRAINED)

run: install bundle train
	$(BIN)/lmrec serve --bundle $(TRAINED)

# Every model (baselines, lmrec INT8 and FP32) on the same split: docs/evaluation.md + docs/evaluation/.
evaluate: install
	$(BIN)/lmrec evaluate

test: install bundle
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install bundle
	$(BIN)/python -m pytest tests/integration

protos: install
	$(BIN)/python tools/gen_protos.py

lint-protos: install
	cd protos && ../$(BIN)/buf lint

clean:
	rm -rf $(VENV) artifacts var
