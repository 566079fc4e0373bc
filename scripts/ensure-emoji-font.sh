#!/usr/bin/env bash
# Installs Debian's fonts-noto-color-emoji (used by the `emoji` dataset) when it is missing.
# Quietly does nothing where it cannot (not root, no apt-get): the emoji tests then skip with a reason.
set -u
for f in /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf /usr/share/fonts/noto/NotoColorEmoji.ttf; do
  [ -f "$f" ] && exit 0
done
command -v apt-get >/dev/null 2>&1 || exit 0
[ "$(id -u)" = "0" ] || { echo "note: fonts-noto-color-emoji missing (sudo apt-get install fonts-noto-color-emoji)"; exit 0; }
echo "installing fonts-noto-color-emoji (for the emoji dataset)"
(apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1; }) || echo "note: could not install fonts-noto-color-emoji"
exit 0
