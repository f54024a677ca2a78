# Two entry points do all the set-up on a fresh machine: `make run` and `make test`.
# Every step is idempotent and skipped when nothing changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := etcd-server docker-registry runc iptables libnftables1 busybox-static skopeo iperf3 hyperfine tmux gcc libc6-dev
NATIVE_SRC := $(wildcard runtime/native/*.c runtime/native/*.h) runtime/native/build.py
NATIVE_OUT := runtime/native/flotilla-shim runtime/native/.built
FLOTILLA_ROOT ?= /var/lib/flotilla

.PHONY: setup apt venv native proto test run stop bench clean

setup: apt venv native

apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

native: runtime/native/.built

runtime/native/.built: $(NATIVE_SRC) $(VENV)/.installed
	$(PY) runtime/native/build.py
	touch $@

proto: venv
	$(PY) proto/generate.py

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

run: setup
	$(PY) -m flotilla.swarmd.quickstart --root $(FLOTILLA_ROOT)

stop:
	$(PY) -m flotilla.swarmd.quickstart --root $(FLOTILLA_ROOT) --stop

bench: setup
	@dpkg -s docker.io >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
	$(PY) bench/container_start.py

clean:
	rm -rf $(VENV) runtime/native/.built runtime/native/flotilla-shim runtime/native/_native*.so build *.egg-info
