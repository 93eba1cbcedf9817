#!/usr/bin/env bash
# PROTOTYPE: a minimal simulated Podman host for the container-level post-copy experiments, like
# infra/podman-host.ts but with the CLI: per-host --root/--tmpdir/--network-config-dir under /tmp/pc-host-NAME,
# the runroot bind-mounted at one shared path (/run/pc-runroot) inside a private mount namespace held by a
# `sleep` process, the network namespace pc-NAME (netns.sh).
#   pc-host.sh NAME up | down | podman ARGS... | run CMD...   (run: a command in the host's mount+net ns)
set -euo pipefail
NAME=$1; shift; D=/tmp/pc-host-$NAME; SHARED=/run/pc-runroot
CONF=${PC_CONTAINERS_CONF:-/tmp/pc-containers.conf}  # infra/podman/containers.conf + the runc-lazy runtime
holder() { cat $D/holder.pid; }
inns() { nsenter --mount=/proc/$(holder)/ns/mnt --net=/run/netns/pc-$NAME -- env CONTAINERS_CONF=$CONF TMPDIR=$D/tmp \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
pod() { inns podman --root $D/root --runroot $SHARED --tmpdir $D/tmp --network-config-dir $D/net --volumepath $D/vol \
  --storage-driver overlay --cgroup-manager cgroupfs --events-backend file "$@"; }
case "${1:-}" in
  up) HERE="$(cd "$(dirname "$0")" && pwd)"
      [ -f /tmp/pc-containers.conf ] || sed "s|^runc = \\[.*|&\\nrunc-lazy = [\"$HERE/runc-lazy\"]|" \
        "$HERE/../podman/containers.conf" > /tmp/pc-containers.conf
      mkdir -p $D/root $D/runroot $D/tmp $D/net $D/vol $SHARED
      nsenter --net=/run/netns/pc-$NAME -- unshare --mount --propagation private -- sh -c \
        "mount --bind $D/runroot $SHARED && exec sleep infinity" </dev/null >/dev/null 2>&1 &
      echo $! > $D/holder.pid; sleep 0.3; echo "host $NAME: mount ns holder $(holder)" ;;
  down) pod rm -af -t 1 >/dev/null 2>&1 || true; pod rmi -af >/dev/null 2>&1 || true
        inns sh -c "umount -R $D/root/overlay 2>/dev/null; true" || true
        kill $(holder) 2>/dev/null || true; rm -f $D/holder.pid ;;
  podman) shift; pod "$@" ;;
  run) shift; inns "$@" ;;
  *) echo "usage: $0 NAME up|down|podman ARGS|run CMD" >&2; exit 2 ;;
esac
