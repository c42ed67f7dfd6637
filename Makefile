# make run   - create .venv, install, run the demo pipeline on the built-in digits data
# make test  - same install, then the test suite (what CI runs)
# make images - build all three Docker images with buildah and check them inside (slow; root)
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-deps images bench lint clean

install: $(STAMP)

# Reinstall only when the dependency files change, so a second `make test` is instant.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,executorch]'
	touch $(STAMP)

run: install
	$(BIN)/edgekd run pipelines/mobile.yaml

# System tools the device tests drive for real (sshd, adb, qemu-user). Installed when missing
# and we may (root with apt-get); otherwise those tests skip and say why.
test-deps:
	@./tests/system_deps.sh

test: install test-deps
	$(BIN)/pytest -q

# The images built for real on local stand-in bases (docker/local/build.sh), then exercised
# inside: device-arm64 (also in make test), workstation (~8 GB) and jetson. -rP prints each
# build's time and size.
images: install test-deps
	EDGEKD_TEST_IMAGES=1 $(BIN)/pytest -q -rP tests/docker/test_images.py

bench: install
	$(BIN)/python -m bench.run_all

lint: install
	$(BIN)/ruff check edgekd tests bench

clean:
	rm -rf runs .pytest_cache
