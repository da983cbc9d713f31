#!/usr/bin/env bash
# Installs the Prometheus server and promtool for tests/tests/prometheus.rs.
# Idempotent: does nothing when both are already on PATH. Debian/Ubuntu only
# (apt); run as root. Debian's package provides /usr/bin/prometheus and
# /usr/bin/promtool.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus.sh: promtool/prometheus missing and apt-get unavailable;" \
    "install Prometheus (https://prometheus.io/download/) and put both on PATH" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "install-prometheus.sh: need root (or sudo) to apt-get install prometheus" >&2
    exit 1
  fi
fi

echo "install-prometheus.sh: installing prometheus (server and promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
# The package's maintainer scripts start a prometheus service through
# invoke-rc.d. In a container without an init system that step fails or is
# skipped; a policy-rc.d that denies service starts (exit 101) makes it a
# clean no-op, and is removed again afterwards if we created it.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 0755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

"${sudo[@]}" apt-get update -qq
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends prometheus >/dev/null; then
  # A maintainer script that still failed to start the service leaves the
  # package unconfigured; configure it without starting anything.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
fi

for tool in prometheus promtool; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-prometheus.sh: $tool still not on PATH after installing" >&2
    exit 1
  fi
done
