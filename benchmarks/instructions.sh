#!/usr/bin/env bash
# Deterministic cost per unit of work: instructions counted by valgrind's callgrind
# (repeatable whatever else the machine does). Each figure runs a workload at two sizes in one
# process; the difference divided by the difference in units is the marginal cost per unit,
# start-up excluded. Compare two versions of mio by running it once with each installed.
#
#   session layer (session_cost.py's own workloads): mio per W2 request, per W3 round trip,
#     per 64 KiB bulk write;
#   systems (the end-to-end benchmark's own W2/W3 client and server, client and server in one
#     process): mio, mio-cb (the server on mio.StreamProtocol), mio-pure
#     (MIO_NO_EXTENSIONS=1) and raw TCP (b), so the ratio
#     mio / raw TCP (b) is the one the W2 CPU target speaks about, without noise;
#   W3 per round trip (200 streams, 5 against 25 round trips each: stream set-up excluded)
#     for the same systems and for tcp-task, the coroutine-per-stream floor (raw TCP (b)
#     with a task per stream on the server): raw TCP (b) / tcp-task bounds what a
#     coroutine-per-stream server reaches against raw TCP (b) on W3.
#
# Needs valgrind (Debian package). Usage: benchmarks/instructions.sh [--systems-only]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
count() {  # args of session_cost.py
  count_script session_cost.py "$@"
}
count_script() {  # script args...
  local script=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    python "$here/$script" "$@" 2>&1 |
    grep -o "Collected : [0-9]*" | awk '{print $3}'
}
per_roundtrip() {  # label script args...
  local label=$1 script=$2
  shift 2
  local a b
  a=$(count_script "$script" "$@" --rounds 5)
  b=$(count_script "$script" "$@" --rounds 25)
  echo "$label: $(( (b - a) / (200 * 20) )) instructions per round trip"
}
marginal() {  # label unit small large args...
  local label=$1 unit=$2 small=$3 large=$4
  shift 4
  local a b
  a=$(count "$@" --size "$small")
  b=$(count "$@" --size "$large")
  echo "$label: $(( (b - a) / (large - small) )) instructions per $unit"
}
if [ "${1:-}" != "--systems-only" ]; then
  marginal "mio session rpc" request 640 2560 --one rpc
  marginal "mio session streams" "round trip/5" 100 400 --one streams
  marginal "mio session bulk" "64 KiB write" 64 320 --one bulk
fi
for system in mio mio-cb mio-pure tcp-b; do
  name=$system
  env=(MIO_NO_EXTENSIONS=0)
  if [ "$system" = mio-pure ]; then name=mio; env=(MIO_NO_EXTENSIONS=1); fi
  export "${env[@]}"
  marginal "$system W2" request 640 2560 --one rpc --system "$name"
  # W3: size streams x 5 round trips; per stream = 5 round trips
  marginal "$system W3" "stream (5 round trips)" 100 400 --one streams --system "$name"
done
for system in mio mio-cb mio-pure tcp-b tcp-task; do
  name=$system
  export MIO_NO_EXTENSIONS=0
  if [ "$system" = mio-pure ]; then name=mio; export MIO_NO_EXTENSIONS=1; fi
  per_roundtrip "$system W3" session_cost.py --one streams --system "$name" --size 200
done
