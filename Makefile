# Every target sets up what it needs: a fresh clone runs `make run` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint format bench faust-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)"; exit 1; }
	@scripts/ensure-icu
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tiphub up $(ARGS)

# The whole suite on Apache Kafka (one node per test process; TIPHUB_TEST_BROKER picks another), then the
# smoke subset marked `noida` on noida-db, the zero-install broker of `make run`. Two test processes (a
# file's tests stay in one): the suite mostly waits on brokers and processes, not on the two cores.
PYTEST_PARALLEL ?= -n 2 --dist loadfile
test: $(STAMP)
	@scripts/ensure-chromium
	@scripts/ensure-postgres
	@scripts/ensure-java
	@scripts/ensure-oidc-provider
	@scripts/ensure-axe
	@# the pinned Apache Kafka's jars, fetched once before two test processes would both ask Maven
	$(PY) -c 'from pathlib import Path; from adapters.kafka.apache_kafka import classpath; classpath(Path("build/kafka"), print)'
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(ARGS)
	TIPHUB_TEST_BROKER=noida $(PY) -m pytest -q $(PYTEST_PARALLEL) -m noida tests/integration $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit $(ARGS)

lint: $(STAMP)
	$(PY) scripts/check_layers.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks and the soak on Apache Kafka (TIPHUB_TEST_BROKER's default), the soak again on noida-db,
# `tiphub bench` on each broker with one and two workers, and `tiphub bench history` on Apache Kafka.
bench: $(STAMP)
	@scripts/ensure-java
	@scripts/ensure-oidc-provider
	@scripts/ensure-axe
	$(PY) -m pytest -q -s benchmarks --benchmark-columns=min,median,mean,ops $(ARGS)
	HYPOTHESIS_PROFILE=bench $(PY) -m pytest -q --timeout 1800 tests/unit/test_policy_properties.py tests/unit/test_convert.py
	TIPHUB_FUZZ_EXAMPLES=200 TIPHUB_STATEFUL_EXAMPLES=400 $(PY) -m pytest -q --timeout 1800 tests/integration/test_gateway.py -k "no_operation_answers_5xx or keep_the_release_promises"
	TIPHUB_NONINTERFERENCE_EXAMPLES=12 $(PY) -m pytest -q tests/integration/test_noninterference.py
	TIPHUB_TEST_BROKER=noida $(PY) -m pytest -q -s benchmarks/test_soak.py $(ARGS)
	$(VENV)/bin/tiphub bench --broker-kind kafka --out build/bench-kafka-1-worker.json
	$(VENV)/bin/tiphub bench --broker-kind kafka --workers 2 --out build/bench-kafka-2-workers.json
	$(VENV)/bin/tiphub bench --broker-kind noida --out build/bench-1-worker.json
	$(VENV)/bin/tiphub bench --broker-kind noida --workers 2 --out build/bench-2-workers.json
	@# restarts, peak RSS and query latencies as one history grows (docs/performance.md, "History")
	$(VENV)/bin/tiphub bench history --reports 10000 --reports 100000 --out build/bench-history.json
	@# faust Tables against the stage state store (docs/performance.md); faust's RocksDB store needs rocksdict
	$(PY) -m pip install -q 'rocksdict==0.3.29'
	$(PY) -m benchmarks.faust_tables --broker-kind kafka --keys 10000

faust-check: $(STAMP)
	$(PY) -m benchmarks.faust_exactly_once --broker-kind noida
	@scripts/ensure-java
	$(PY) -m benchmarks.faust_exactly_once --broker-kind kafka

clean:
	rm -rf $(VENV) .tiphub .pytest_cache build *.egg-info
