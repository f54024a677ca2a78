# Two entry points do all the set-up on a fresh machine: `make run` and `make test`.
# Every step is idempotent and skipped when nothing changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := etcd-server docker-registry runc iptables libnftables1 busybox-static skopeo iperf3 hyperfine tmux gcc libc6-dev docker.io
NATIVE_SRC := $(wildcard runtime/native/*.c runtime/native/*.h) runtime/native/build.py
NATIVE_OUT := runtime/native/flotilla-shim runtime/native/.built
FLOTILLA_ROOT ?= /var/lib/flotilla

.PHONY: setup apt venv native pyc proto test run stop bench clean

setup: apt venv native pyc

apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); }

venv: $(VENV)/.installed $(VENV)/.path-entry

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The editable install's .pth imports setuptools' finder hook (pathlib, importlib.util, ...: ~25 ms
# of every `swarmctl` start). A plain path entry does the same job for this layout: a `flotilla/`
# dir of symlinks to the top-level folders (pyproject's package-dir), so new modules still appear
# without reinstalling. `editable_mode=compat` cannot express the folder renames.
LINKS := $(VENV)/flotilla-src/flotilla
$(VENV)/.path-entry: $(VENV)/.installed Makefile
	mkdir -p $(LINKS)
	for d in proto runtime agent manager swarmctl swarmd; do ln -sfn $(CURDIR)/$$d $(LINKS)/$$d; done
	for pth in $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/__editable__.flotilla-*.pth; do \
	  echo $(CURDIR)/$(VENV)/flotilla-src > $$pth; done
	$(PY) -c 'import flotilla.swarmctl.main, flotilla.runtime.native'
	touch $@

# Bytecode written up front: with PYTHONDONTWRITEBYTECODE set (as in this environment) every
# `swarmctl` would otherwise compile its modules from source, ~30 ms per command. Python still
# checks each .pyc against its source, so an edited file is never run stale.
pyc: venv
	$(PY) -m compileall -q proto runtime agent manager swarmctl swarmd

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
	$(PY) bench/container_start.py

clean:
	rm -rf $(VENV) runtime/native/.built runtime/native/flotilla-shim runtime/native/_native*.so build *.egg-info
