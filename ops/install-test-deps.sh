#!/usr/bin/env bash
# What `make test` needs beyond Python: Debian's Chromium (the dashboard's browser tests
# drive it through Playwright) and bubblewrap (the sandbox QA runs generated code in; its
# tests run on the real thing, and on the unshare fallback, util-linux). Installed once
# when missing and this is root; otherwise say what to install. Quiet when all is there.
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v bwrap >/dev/null || missing+=(bubblewrap)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (for the browser and sandbox tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
else
    echo "note: install ${missing[*]} (apt-get install ${missing[*]}) for the browser and sandbox tests" >&2
fi
