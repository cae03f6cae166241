#!/usr/bin/env bash
# Install the named Debian packages that are missing. As root: apt-get does it.
# Otherwise: print the exact command to run and fail, so nothing half-installs.
set -euo pipefail
missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "Hallmark needs these Debian packages: ${missing[*]}" >&2
    echo "Install them, then run make again:" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or a day old.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]]; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
