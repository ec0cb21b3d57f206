.PHONY: run test emulator-start emulator-stop bootstrap build-lambda fmt lint

# Serve the API on 127.0.0.1:$${PORT:-3000}, keeping its data in $${DATA_DIR:-.webhooks-data}
# (SQLite), with the quick start's build: without the AWS SDK (see README "Run it locally").
run:
	cargo run -p webhooks-local --no-default-features

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

# Lambda packages for arm64: installs cargo-lambda (with zig, from PyPI) into .venv and the
# aarch64 rustup target if missing, then builds target/lambda/{api,ingest,dispatcher}/bootstrap.
build-lambda:
	@test -x .venv/bin/cargo-lambda || (python3 -m venv .venv && .venv/bin/pip install --quiet cargo-lambda)
	@rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 -p webhooks-api -p webhooks-ingest -p webhooks-dispatcher
	@ls -l target/lambda/api/bootstrap target/lambda/ingest/bootstrap target/lambda/dispatcher/bootstrap

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
