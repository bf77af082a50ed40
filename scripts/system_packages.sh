#!/usr/bin/env bash
# The real components the test suite starts on loopback ports of its own (docs/integrations.md):
# Slurm with munge, Prometheus, HAProxy, etcd 3.4 and PostgreSQL, all from Debian;
# Debian's Chromium, which the console's browser tests drive through Playwright (never a downloaded browser);
# and systemd-analyze, which checks the systemd unit in deploy/. Idempotent: installs only what is
# missing. Services are never started here; the tests start and stop their own instances.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

declare -A BINARY_OF=(
  [munge]=munged
  [slurmctld]=slurmctld
  [slurmd]=slurmd
  [slurm-client]=scontrol
  [prometheus]=prometheus
  [haproxy]=haproxy
  [etcd-server]=etcd
  [etcd-client]=etcdctl
  [chromium]=chromium
  [systemd]=systemd-analyze  # tests/test_deploy.py verifies deploy/systemd/seamguard.service
)
missing=()
for pkg in "${!BINARY_OF[@]}"; do
  bin="${BINARY_OF[$pkg]}"
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("$pkg")
  fi
done
# PostgreSQL's server binaries live under a versioned directory, not on PATH.
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
as_root apt-get update -qq
# policy-rc.d 101: the packages' scripts must not start system services (the tests run their own).
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
  as_root chmod +x "$policy"
  created=1
fi
trap '[ "$created" = 1 ] && as_root rm -f "$policy"' EXIT
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
