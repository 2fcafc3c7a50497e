#!/usr/bin/env bash
# Install gambar on a fresh machine: `bash scripts/install.sh` for use, `... test` for development.
# Every pip call goes through constraints.txt, which pins torch to the CPU build on this disk.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${1:-}" = "test" ]; then
    # Debian packages: fonts the emoji/glyph datasets draw from (+ fribidi so Pillow joins emoji
    # sequences, unicode-data for emoji groups), and Chromium + its driver for the browser test.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            fonts-noto-color-emoji fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 \
            unicode-data libfribidi0 chromium chromium-driver >/dev/null
    else
        echo "note: not root, so the Debian packages (fonts, chromium) were not installed" >&2
    fi
    extra=".[test]"
else
    extra="."
fi

# torch first, from the pinned CPU build (a newer one would pull a multi-GB CUDA build).
python3 -m pip install -q -c constraints.txt torch==2.13.0
python3 -m pip install -q -c constraints.txt -e "$extra"

# torchvision breaks this torch and everything that imports it: keep it out.
if python3 -m pip show torchvision >/dev/null 2>&1; then
    echo "error: torchvision is installed; it breaks torch 2.13.0 here (../shared/DEPENDENCIES.md)" >&2
    exit 1
fi
