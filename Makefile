# Denis: `make run` starts it, `make test` runs the whole suite, `make check` lints and types.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast test-chaos test-browser test-fuzz check bench clean neo4j-launcher

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Denis needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/denis up

test: $(STAMP) neo4j-launcher
	bash scripts/install-test-deps.sh
	$(BIN)/pytest

# The real Neo4j the tests start (tests/neo4j-launcher), built only when missing or older than its
# sources, then run once to record a class-data archive that shortens its start.
NEO4J := tests/neo4j-launcher
NEO4J_JAR := $(NEO4J)/target/neo4j-launcher.jar
NEO4J_CDS := $(NEO4J)/target/neo4j-launcher.jsa
# Keep in step with NEO4J_JVM_FLAGS in tests/servers.py, or the archive goes unused.
NEO4J_JVM := -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1

neo4j-launcher: $(NEO4J_JAR)

$(NEO4J_JAR): $(NEO4J)/pom.xml $(shell find $(NEO4J)/src -type f 2>/dev/null)
	@bash scripts/install-test-deps.sh
	@if ! command -v mvn >/dev/null 2>&1; then \
	  echo "mvn is not installed: the Neo4j tests will be skipped" >&2; exit 0; fi; \
	mvn -q -f $(NEO4J)/pom.xml package -DskipTests && touch $@ && rm -f $(NEO4J_CDS) && \
	tmp=$$(mktemp -d) && \
	{ java $(NEO4J_JVM) -XX:ArchiveClassesAtExit=$(NEO4J_CDS) -jar $(CURDIR)/$@ --warm-up $$tmp/db \
	    >$$tmp/warm-up.log 2>&1 || echo "no class-data archive: Neo4j starts slower" >&2; }; \
	rm -rf $$tmp

# The slow parts apart (CI runs everything with `make test`).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not chaos and not browser and not fuzz"

test-chaos: $(STAMP)
	$(BIN)/pytest -m chaos

test-browser: $(STAMP)
	$(BIN)/pytest -m browser

test-fuzz: $(STAMP)
	$(BIN)/pytest -m fuzz

check: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) neo4j-launcher
	bash scripts/install-test-deps.sh
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
