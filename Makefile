# osteonode — `make demo` and `make test` work on a fresh Debian machine (they install what they need).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OHIF_VERSION := 3.13.2
OHIF_DIST := var/ohif/package/dist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-packages serve demo demo-weights test bench fuzz clean

install: system-packages $(VENV)/.installed $(OHIF_DIST)/index.html

# The Debian packages the tests and demo talk to: real DICOM peers (dcmtk, Orthanc), validators
# (dicom3tools, GDCM tools), a database (PostgreSQL), a browser for the validation report and the
# viewer tests (Chromium), Orthanc's DICOMweb plugin (for OHIF), npm (to fetch OHIF), the openssl tool
# that makes the DICOM TLS tests' throw-away certificates, and the tools the deploy/ tests check the
# systemd unit (systemd-analyze) and the compose file (docker-compose) with.
# Installs only what is missing, so a machine that has them all needs no package manager.
system-packages:
	@missing=""; \
	for tool in storescu:dcmtk dciodvfy:dicom3tools gdcmconv:libgdcm-tools Orthanc:orthanc chromium:chromium \
		pdftotext:poppler-utils openssl:openssl systemd-analyze:systemd docker-compose:docker-compose; do \
		command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The OHIF viewer, built (the @ohif/app package ships dist/), for the viewer tests and the demo's
# study links; `npm pack` fetches the package alone, without the development dependencies that
# `npm install` would resolve for it.
$(OHIF_DIST)/index.html:
	mkdir -p var/ohif
	cd var/ohif && npm pack --silent @ohif/app@$(OHIF_VERSION) && tar xzf ohif-app-$(OHIF_VERSION).tgz
	rm -f var/ohif/ohif-app-$(OHIF_VERSION).tgz
	touch $@

# torch is installed first, pinned, so that nothing later pulls a CUDA build from the registry.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: install
	$(BIN)/osteonode serve

demo: install
	$(BIN)/osteonode demo

# The shipped demo weights, made from synthetic phantoms exactly as each pipeline's DemoRecipe says
# (phantoms under var/demo-training/, models under models/<part>-demo/), then the held-out benchmarks
# write the figures they print into the model cards. The shipped weights were trained on the CPU,
# where the same command gives the same bytes; DEMO_DEVICE=cuda trains faster, to other bytes.
DEMO_DEVICE ?= cpu
demo-weights: install
	$(BIN)/osteonode train lumbar --demo --device $(DEMO_DEVICE)
	$(BIN)/osteonode train chest --demo --device $(DEMO_DEVICE)
	$(BIN)/osteonode train hip --demo --device $(DEMO_DEVICE)
	$(BIN)/osteonode train lumbar_ap --demo --device $(DEMO_DEVICE)
	$(BIN)/osteonode train lumbar_lateral --demo --device $(DEMO_DEVICE)
	$(BIN)/python bench/acceptance.py --record
	$(BIN)/python bench/lumbar_classifiers.py --record

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pixels.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/capture.py

# Mutated files against a running node (bench/fuzz.py); prints deaths, losses and peak memory.
fuzz: install
	$(BIN)/python bench/fuzz.py --count 2000

clean:
	rm -rf $(VENV) var demo-out bench-out
