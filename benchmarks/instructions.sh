#!/usr/bin/env bash
# Deterministic cost of mio's session layer: instructions counted by valgrind's callgrind
# (repeatable whatever else the machine does), for each workload of session_cost.py at two
# sizes; the difference divided by the difference in units is the marginal cost per unit,
# start-up excluded. Compare two versions by running it once with each installed.
# Needs valgrind (Debian package). Usage: benchmarks/instructions.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    python "$here/session_cost.py" --one "$1" --size "$2" 2>&1 |
    grep -o "Collected : [0-9]*" | awk '{print $3}'
}
for spec in "rpc 640 2560 request" "streams 100 400 round-trip/5" "bulk 64 320 64KiB-write"; do
  set -- $spec
  a=$(count "$1" "$2"); b=$(count "$1" "$3")
  echo "$1: $(( (b - a) / ($3 - $2) )) instructions per $4"
done
