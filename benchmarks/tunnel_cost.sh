#!/usr/bin/env bash
# Deterministic cost of mio tunnel's copy path: instructions counted by valgrind's callgrind
# for tunnel_cost.py's workloads (relay, agent, service and client in one process), each at
# two sizes; the difference divided by the difference in units is the marginal cost per MB
# tunneled or per connection (1 KB request, 1 KB response), start-up excluded. Includes the
# client and service ends (the same code in every version of mio). Add --tls for a TLS link.
#
# Needs valgrind (Debian package). Usage: benchmarks/tunnel_cost.sh [--tls]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    python "$here/tunnel_cost.py" "$@" 2>&1 |
    grep -o "Collected : [0-9]*" | awk '{print $3}'
}
marginal() {  # label unit small large args...
  local label=$1 unit=$2 small=$3 large=$4
  shift 4
  local a b
  a=$(count "$@" --size "$small")
  b=$(count "$@" --size "$large")
  echo "$label: $(( (b - a) / (large - small) )) instructions per $unit"
}
marginal "tunnel bulk${1:+ $1}" MB 8 40 --one bulk "$@"
marginal "tunnel connections${1:+ $1}" connection 100 400 --one conns "$@"
