# Lobby: `make run` serves a demo on http://127.0.0.1:5000, `make test` runs everything.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never

# uv from the PATH, or a private copy from PyPI on machines without it, at a version that
# reads uv.lock.
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
UV_VERSION := 0.13.9
# Who carries `make run`'s calls, chosen as lobby/config.py does: LOBBY_MEDIA, else OpenVidu
# when OPENVIDU_URL is set, else peer to peer.
MEDIA := $(or $(strip $(LOBBY_MEDIA)),$(if $(strip $(OPENVIDU_URL)),openvidu,p2p))

.PHONY: install vendor run test lint typecheck pytest clean

install: .venv/.installed

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	touch $@

# The browser libraries come from the npm registry at the version and checksum that
# static/vendor.json names; never committed. Quick when they are already in static/vendor/.
vendor:
	python3 scripts/vendor.py

# Demo users; calls peer to peer unless OPENVIDU_URL or LOBBY_MEDIA says otherwise. Calls
# through OpenVidu or LiveKit load a library from npm (openvidu-browser, livekit-client), so
# only peer-to-peer calls start without fetching them.
run: install $(if $(filter p2p P2P,$(MEDIA)),,vendor)
	.venv/bin/lobby serve --demo

lint: install
	.venv/bin/ruff check lobby tests
	.venv/bin/ruff format --check lobby tests

typecheck: install
	.venv/bin/mypy

# Three runs, one coverage report. The browser tests and the rest side by side (each mostly
# waits: on Chromium, on servers starting; together they keep both cores busy), the pages'
# output after the rest's; then the calls with real WebRTC media between pages, alone, in a
# network namespace with only loopback (where Chromium thinks it is offline, so the rest of
# the suite stays outside it).
NOT_RTC = .venv/bin/pytest -m "not loopback_rtc" --cov --cov-report= --cov-fail-under=0
pytest: install vendor
	rm -f .coverage .coverage.pages .coverage.rest
	COVERAGE_FILE=.coverage.pages $(NOT_RTC) tests/e2e $(PYTEST_ARGS) > .pytest-pages.log 2>&1 & \
	pages=$$!; \
	COVERAGE_FILE=.coverage.rest $(NOT_RTC) --ignore=tests/e2e $(PYTEST_ARGS); rest=$$?; \
	wait $$pages; shown=$$?; cat .pytest-pages.log; [ $$rest -eq 0 ] && [ $$shown -eq 0 ]
	.venv/bin/coverage combine --quiet .coverage.pages .coverage.rest
	scripts/loopback-only .venv/bin/pytest -m loopback_rtc --cov --cov-append --cov-report=term $(PYTEST_ARGS)

test: lint typecheck pytest

# The README's pictures: the real pages in Chromium, a peer-to-peer call with real video.
.PHONY: screenshots
screenshots: install
	scripts/loopback-only .venv/bin/python scripts/screenshots.py

clean:
	rm -rf .venv .tools static/vendor .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* .pytest-pages.log

# The benchmark (bench/, results in docs/bench/): the lobby (with OpenVidu 2, and with LiveKit)
# against Node.js ws, the Starlette tutorial loop and python-socketio under the same load.
# `make bench` is a quick N=1,000 run (a few minutes); `make bench-full` is N=1,000 to 15,000
# (most of an hour).
.PHONY: bench bench-full
bench bench-full: | $(UV)
	$(UV) sync --locked --group bench
	cd bench/peers/node && npm ci --silent --no-audit --no-fund
	.venv/bin/python -m bench.run $(if $(filter bench,$@),--quick) $(BENCH_ARGS)

# Fan-out across instances sharing one Redis (issue 13): 2,000 and 10,000 tabs on one instance
# and on two, then 30,000 held over three (a few minutes; redis-server needed) → docs/bench/cluster/.
.PHONY: bench-cluster
bench-cluster: | $(UV)
	$(UV) sync --locked --group bench
	.venv/bin/python -m bench.cluster $(BENCH_ARGS)
