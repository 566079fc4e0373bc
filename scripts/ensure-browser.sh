#!/usr/bin/env bash
# Installs Debian's chromium (the headless browser the web-page test drives with Playwright) when missing.
# Where it cannot (not root, no apt-get, the install fails) it says so and exits 0: the browser test
# then skips with that reason, and the test summary counts the skip.
set -u
browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; } 2>/dev/null
browser >/dev/null && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no chromium and no apt-get here; install a Chromium to run the web-page test (it will skip)"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "note: no chromium; run: sudo apt-get install chromium (the web-page test will skip)"
  exit 0
fi
echo "installing chromium (for the web-page test)"
apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }
if browser >/dev/null; then
  echo "installed: $(browser)"
else
  echo "WARNING: installing chromium failed; the web-page test will skip"
fi
exit 0
