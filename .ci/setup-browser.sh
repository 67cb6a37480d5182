#!/usr/bin/env bash
# Installs what the status-page browser test needs: Debian's chromium and chromium-driver.
# Idempotent: returns at once when /usr/bin/chromium already runs. Playwright (a dev
# dependency) drives this binary; it never downloads a browser of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ] && /usr/bin/chromium --headless=new --version >/dev/null 2>&1; then
    echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
else
    SUDO=""
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null)"
