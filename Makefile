# Both targets set up what they need: apt packages (ffmpeg for torchcodec, chromium, espeak-ng, sound theme), .venv,
# the pinned stack.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v ffmpeg >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && command -v espeak-ng >/dev/null 2>&1 \
	  && test -d /usr/share/sounds/freedesktop || { \
	  echo "Installing ffmpeg (torchcodec), chromium (the Space app's browser test), espeak-ng and"; \
	  echo "sound-theme-freedesktop (real speech and recorded sounds for the audio-input tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends \
	    ffmpeg chromium espeak-ng sound-theme-freedesktop >/dev/null; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(PY) -m diffusers_sonify.demo

clean:
	rm -rf $(VENV) outputs
