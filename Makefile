# Set-up and everyday commands. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup chromium redis demo test test-sqlite test-postgresql lint run bench clean i18n

setup: $(VENV)/.installed devnet/node_modules/.openmusic-installed web/node_modules/.openmusic-installed chromium redis

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

devnet/node_modules/.openmusic-installed: devnet/package.json devnet/install.sh
	bash devnet/install.sh

web/node_modules/.openmusic-installed: web/package.json web/package-lock.json devnet/node_modules/.openmusic-installed
	PATH="$(CURDIR)/devnet/.node22/bin:$$PATH" npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $@

chromium:              ## Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

redis:                 ## Debian's Redis, PostgreSQL server and nginx: Bluesky's AppView (dev-env TestNetwork) for the feed generator's test, our PostgreSQL engine, the cluster's proxy
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update && apt-get install -y nginx)  # openmusic cluster's proxy (tests/test_cluster.py)

demo: setup            ## local reference PDS + PLC, seeded catalog, AppView on http://127.0.0.1:8080
	$(BIN)/openmusic demo

test: setup            ## lint, then every test (units and end to end on the reference PDS) on SQLite, then on PostgreSQL
	$(BIN)/ruff check .
	$(BIN)/pytest -q
	OPENMUSIC_TEST_ENGINE=postgresql $(BIN)/pytest -q

test-sqlite: setup     ## lint, then every test on SQLite only
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-postgresql: setup ## every test with the runtimes' index on a throwaway PostgreSQL only
	OPENMUSIC_TEST_ENGINE=postgresql $(BIN)/pytest -q

bench: setup           ## record a real stream once, replay it, and measure query latency (in-process and over HTTP)
	test -f bench/data/stream.bin || $(BIN)/python -m bench.record
	test -f bench/data/music/stream.bin || $(BIN)/python -m bench.record --accounts 20 --music-accounts 20 \
		--music-share 1 --commits 10000 --out bench/data/music
	$(BIN)/python -m bench.firehose
	$(BIN)/python -m bench.queries
	$(BIN)/python -m bench.http --readers 1,2,4
	$(BIN)/python -m bench.web_render
	$(BIN)/python -m bench.analytics
	$(BIN)/python -m bench.charts
	$(BIN)/python -m bench.feeds
	$(BIN)/python -m bench.recs

lint: setup
	$(BIN)/ruff check .

run: setup             ## the AppView on the public network (see README for settings)
	$(BIN)/openmusic run

clean:
	rm -rf $(VENV) devnet/node_modules devnet/.node22 web/node_modules data

i18n: setup           ## re-extract the web app's strings and merge them into each language's .po
	$(BIN)/pybabel extract -F web/babel.cfg --no-location --sort-output -o web/locales/messages.pot .
	$(BIN)/pybabel update -i web/locales/messages.pot -d web/locales --ignore-obsolete
