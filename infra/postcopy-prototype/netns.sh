#!/usr/bin/env bash
# PROTOTYPE: two simulated hosts for the post-copy experiments: netns pc-src (10.231.0.1) and pc-dst
# (10.231.0.2) joined by a veth pair. `netns.sh up` / `netns.sh down`.
set -euo pipefail
case "${1:-}" in
  up)
    ip netns add pc-src; ip netns add pc-dst
    ip link add pc-src0 netns pc-src type veth peer name pc-dst0 netns pc-dst
    ip -n pc-src addr add 10.231.0.1/24 dev pc-src0; ip -n pc-dst addr add 10.231.0.2/24 dev pc-dst0
    for n in pc-src pc-dst; do ip -n $n link set lo up; done
    ip -n pc-src link set pc-src0 up; ip -n pc-dst link set pc-dst0 up ;;
  down) ip netns del pc-src 2>/dev/null || true; ip netns del pc-dst 2>/dev/null || true ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
