#!/usr/bin/env bash
# Installs Debian's fonts-noto-color-emoji (used by the `emoji` dataset) when it is missing.
# Where it cannot (not root, no apt-get, the install fails) it says so and exits 0: the emoji tests
# then skip, each with the reason, and the test summary counts the skips.
# PY: the project's Python; the font is looked up with the dataset's own function (font_path).
set -u
PY="${PY:-python3}"
found() { "$PY" -c "import sys; from polyfuse.data.datasets.emoji import font_path; sys.exit(0 if font_path() else 1)" 2>/dev/null; }
found && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: Noto Color Emoji font not found and no apt-get here; install fonts-noto-color-emoji (emoji tests will skip)"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "note: Noto Color Emoji font not found; run: sudo apt-get install fonts-noto-color-emoji (emoji tests will skip)"
  exit 0
fi
echo "installing fonts-noto-color-emoji (for the emoji dataset)"
apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1; }
if found; then
  echo "installed: $("$PY" -c "from polyfuse.data.datasets.emoji import font_path; print(font_path())")"
else
  echo "WARNING: installing fonts-noto-color-emoji failed; the emoji dataset and its tests are unavailable (they will skip)"
fi
exit 0
