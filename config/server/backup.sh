#!/usr/bin/env bash
# Backs up the monitoring server into one dated archive: a Prometheus TSDB snapshot
# (admin API; Prometheus runs with --web.enable-admin-api), Grafana's database, and the
# server configuration (without secrets).
#
#   backup.sh --prometheus-data DIR [--prometheus-url URL] [--grafana-data DIR]
#             [--config DIR] [--out DIR]
#
#   --prometheus-data  Prometheus' --storage.tsdb.path as this script sees it
#                      (Debian: /var/lib/prometheus/metrics2; compose: the volume's
#                      _data directory, see `docker volume inspect nodewatch_prometheus-data`)
#   --prometheus-url   default http://127.0.0.1:9090
#   --grafana-data     the directory holding grafana.db (Debian: /var/lib/grafana)
#   --config           default: the directory of this script (config/server)
#   --out              default: the current directory
#
# Restore: stop Prometheus, extract the archive, move prometheus/snapshot/* into an
# empty --storage.tsdb.path, start it (see docs/monitoring-server.md).
set -euo pipefail

die() { printf 'backup.sh: %s\n' "$*" >&2; exit 1; }

prometheus_url=http://127.0.0.1:9090
prometheus_data=
grafana_data=
config_dir=$(cd "$(dirname "$0")" && pwd)
out_dir=.
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case $1 in
    --prometheus-url) prometheus_url=$2 ;;
    --prometheus-data) prometheus_data=$2 ;;
    --grafana-data) grafana_data=$2 ;;
    --config) config_dir=$2 ;;
    --out) out_dir=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
[ -n "$prometheus_data" ] || die "--prometheus-data is required"
[ -d "$prometheus_data" ] || die "--prometheus-data $prometheus_data is not a directory"
[ -z "$grafana_data" ] || [ -f "$grafana_data/grafana.db" ] || die "no grafana.db in $grafana_data"
[ -d "$config_dir" ] || die "--config $config_dir is not a directory"
mkdir -p "$out_dir"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
staging=$(mktemp -d)
snapshot_dir=
cleanup() {
  rm -rf "$staging"
  if [ -n "$snapshot_dir" ]; then rm -rf "$snapshot_dir"; fi
}
trap cleanup EXIT

# The snapshot: hard links of the current blocks plus the head, taken by Prometheus.
response=$(curl -sS --fail-with-body -X POST "$prometheus_url/api/v1/admin/tsdb/snapshot") \
  || die "snapshot request to $prometheus_url failed (is --web.enable-admin-api set?): $response"
name=$(printf '%s' "$response" | sed -n 's/.*"name":"\([^"]*\)".*/\1/p')
[ -n "$name" ] || die "unexpected snapshot answer: $response"
snapshot_dir=$prometheus_data/snapshots/$name
[ -d "$snapshot_dir" ] || die "snapshot $name not found under $prometheus_data/snapshots"
mkdir -p "$staging/prometheus"
cp -a "$snapshot_dir" "$staging/prometheus/snapshot"

if [ -n "$grafana_data" ]; then
  mkdir -p "$staging/grafana"
  if command -v sqlite3 >/dev/null 2>&1; then
    # A consistent copy even while Grafana writes.
    sqlite3 "$grafana_data/grafana.db" ".backup '$staging/grafana/grafana.db'"
  else
    cp -a "$grafana_data/grafana.db" "$staging/grafana/grafana.db"
  fi
fi

# The configuration, without secrets or rendered files holding them.
mkdir -p "$staging/config"
tar -C "$config_dir" --exclude=./secrets --exclude=./alertmanager/rendered -cf - . \
  | tar -C "$staging/config" -xf -

archive=$out_dir/nodewatch-backup-$stamp.tar.gz
tar -C "$staging" -czf "$archive.tmp" .
mv "$archive.tmp" "$archive"
printf '%s\n' "$archive"
