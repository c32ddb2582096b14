# nexusd: the commands a developer types.
CARGO ?= cargo

.PHONY: run test lint bench bench-quick build

build:
	$(CARGO) build --release

# The agent on the examples, with the embedded SQLite database in
# ./nexus-data/.nexus/nexus.db. Drop files under ./nexus-data/workspace/.
run: build
	./target/release/nexusd validate -f workflows.example
	./target/release/nexusd serve --data-dir ./nexus-data --config-dir workflows.example

test:
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: build
	bash bench/run.sh

bench-quick: build
	QUICK=1 bash bench/run.sh
