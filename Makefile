.PHONY: run test emulator-start emulator-stop bootstrap build-lambda fmt lint

# Serve the API on 127.0.0.1:$${PORT:-3000} with in-memory adapters.
run:
	cargo run -p webhooks-local

# Everything CI runs: emulator install + start, fmt, clippy, all tests, template checks.
test:
	infra/test.sh

emulator-start:
	infra/emulator.sh start && infra/emulator.sh env

emulator-stop:
	infra/emulator.sh stop

# Create the tables and queues on $$AWS_ENDPOINT_URL (LocalStack, moto server).
bootstrap:
	cargo run -p webhooks-local -- bootstrap

# Lambda packages for arm64 (needs cargo-lambda and the aarch64 rustup target).
build-lambda:
	cargo lambda build --release --arm64

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
