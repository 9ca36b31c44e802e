#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmark need, when they are missing:
# PostgreSQL server and client binaries, Redis, and Prometheus's parts (prometheus and promtool, the
# Pushgateway, node_exporter). Idempotent; does nothing when all are present.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
# Debian's `prometheus` package ships both the server and promtool (rules checks and unit tests).
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services on install; the project never uses them, its tests start their own.
for service in redis-server postgresql prometheus prometheus-pushgateway prometheus-node-exporter; do
  "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
done
