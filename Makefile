# nexusd: the commands a developer types.
CARGO ?= cargo

.PHONY: run test lint bench bench-quick build dist

build:
	$(CARGO) build --release

# The shipped binary (fat LTO, size-optimised): target/dist/nexusd.
dist:
	$(CARGO) build --profile dist

# The agent on the examples, with the embedded SQLite database in
# ./nexus-data/.nexus/nexus.db. Drop files under ./nexus-data/workspace/.
run: build
	./target/release/nexusd validate -f workflows.example
	./target/release/nexusd serve --data-dir ./nexus-data --config-dir workflows.example

# The suite, then the API against its OpenAPI document (schemathesis, in a
# virtual environment the script makes).
test:
	$(CARGO) test --all-targets
	bash tests/schemathesis/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: dist
	bash bench/run.sh

bench-quick: dist
	QUICK=1 bash bench/run.sh
