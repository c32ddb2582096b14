# nexusd: the commands a developer types.
CARGO ?= cargo

.PHONY: run test lint bench bench-quick build

build:
	$(CARGO) build --release

# Until the engine lands, `make run` validates the examples and says so.
run: build
	./target/release/nexusd validate -f workflows.example
	@echo "The examples are valid. The agent itself (nexusd serve) is not built yet:"
	@echo "see the README's status section. Try: ./target/release/nexusd test-match -f workflows.example --event file.created --path /workspace/uploads/a.txt"

test:
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: build
	bash bench/run.sh

bench-quick: build
	QUICK=1 bash bench/run.sh
