# Flowdeck: the two commands of the README, plus helpers for developers.
.PHONY: run test bench build prepare fmt lint

run:      ## install what is missing, build, migrate, serve the dashboard
	@scripts/run.sh

test:     ## every test: unit, integration (real PostgreSQL), end-to-end (Chromium)
	@scripts/test.sh

bench:    ## benchmark at 10,000 pipelines, 1,000,000 runs, 5,000,000 events; report in target/bench/report.md (not part of test)
	@scripts/bench.sh

build:    ## release build of server and wasm
	@scripts/build.sh

prepare:  ## regenerate .sqlx/ after changing a query or migration
	@scripts/prepare.sh

fmt:
	cargo fmt --all

lint:     ## cargo fmt --check and clippy -D warnings (server and wasm); part of make test
	@scripts/lint.sh
