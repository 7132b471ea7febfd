# Developer entry points; .ci/run and the README call the same targets.
.PHONY: fmt lint test dev build release bench soak fuzz-smoke

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

test:
	scripts/test

dev:
	cargo run -- serve --dev

build:
	cargo build --locked

release:
	cargo build --locked --release

bench:
	scripts/bench

fuzz-smoke:
	scripts/fuzz-smoke

soak:
	scripts/soak
