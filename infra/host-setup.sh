#!/usr/bin/env bash
# Gives a Debian 12+ host what a UMS agent needs: its container engine (Podman with runc, conmon, netavark;
# or, with UMS_ENGINE=docker, Debian's docker.io), gcc (to build the CRIU socket check), a CRIU that works on
# this kernel: one that dumps and restores a process holding TCP sockets (listening and established), checked
# for real, not by `criu check`; and on a Podman host the runtime shim post-copy needs.
# cloud-init runs it on the deployment's hosts (terraform/modules/agent-cloud-init): nothing else goes there.
# With UMS_DEV_MACHINE=1 (infra/setup.sh: development and CI machines) also what only the tests, the demo and
# the local stack use: nats-server (the stack's broker), busybox-static (the demo and test images), the clients
# of the real-server test images (redis-tools, libmemcached-tools: clients only, no server starts on the host),
# python3 (the post-copy test workload), fonts-dejavu-core (the benchmark charts) and, side by side with the
# machine's containerd, a containerd 2.x for the simulated Kubernetes nodes (CRI checkpoint).
# Idempotent: every step checks first and says whether it acted or skipped.
#
# Usage: host-setup.sh [--list-packages]
#   --list-packages  print the distribution packages this host would get (one a line) and change nothing
#
# Environment:
#   UMS_ENGINE      the engine the agent drives: podman (default) or docker. For docker it installs docker.io
#                   and CRIU; dockerd's settings (experimental mode, /etc/criu/runc.conf) are the caller's
#                   (agent-cloud-init writes them, the local stack's Docker hosts have their own)
#   UMS_DEV_MACHINE=1  a development machine: also the test-only tools above (infra/setup.sh sets it)
#   UMS_PREFIX      where a side-loaded CRIU goes (default /opt/ums/criu)
#   UMS_WRAPPER_DIR where the `criu` wrapper goes; must come before /usr/sbin in PATH (default /usr/local/sbin)
#   UMS_CRIU_SUITE  Debian suite to side-load CRIU from (default forky: CRIU 4.2+, see MIN_CRIU)
#   UMS_FORCE_SIDELOAD=1  side-load even if the distribution's criu works
#   UMS_CONTAINERD2_PREFIX where containerd 2.x for the simulated CRI nodes goes (default /opt/ums/containerd2)
#   UMS_CONTAINERD2_SUITE  Debian suite to side-load it from (default sid: containerd >= MIN_CONTAINERD2)
set -euo pipefail

UMS_PREFIX="${UMS_PREFIX:-/opt/ums/criu}"
UMS_WRAPPER_DIR="${UMS_WRAPPER_DIR:-/usr/local/sbin}"
UMS_CRIU_SUITE="${UMS_CRIU_SUITE:-forky}"
# CRIU < 4.2 asks every socket for SO_PASSCRED/SO_PASSSEC, which Linux >= 6.16 refuses on inet sockets:
# any server fails to dump ("Can't get 1:16 opt", checkpoint-restore/criu issue 2705, fixed in 4.2).
MIN_CRIU="4.2"
UMS_ENGINE="${UMS_ENGINE:-podman}"
DEV_MACHINE="${UMS_DEV_MACHINE:-0}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '[host-setup] %s\n' "$*"; }
die() { printf '[host-setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Downloads PKG... from Debian SUITE and unpacks them into PREFIX, with a private sources list and state:
# the packages are only unpacked, never installed, because installing them from a newer suite would replace
# the host's own (glibc for CRIU; containerd 1.6, which the Docker hosts use). Returns non-zero when one of
# them is not in SUITE (renamed or dropped there; apt says which).
sideload_debs() { # SUITE PREFIX PKG...
  local suite="$1" prefix="$2" work rc=0
  shift 2
  work="$(mktemp -d /tmp/ums-sideload.XXXXXX)"
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$work/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
                  -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  if apt-get "${apt_opts[@]}" update -qq && (cd "$work" && apt-get "${apt_opts[@]}" download "$@" >/dev/null); then
    mkdir -p "$prefix"
    for deb in "$work"/*.deb; do dpkg -x "$deb" "$prefix"; done
  else
    rc=1
  fi
  rm -rf "$work"
  return "$rc"
}

# --- 1. distribution packages -------------------------------------------------------------------
case "$UMS_ENGINE" in
  podman) ENGINE_PKGS=(podman runc conmon netavark aardvark-dns containernetworking-plugins catatonit) ;;
  # Debian's docker.io brings runc and containerd with it.
  docker) ENGINE_PKGS=(docker.io) ;;
  *) die "UMS_ENGINE must be podman or docker, not '$UMS_ENGINE'" ;;
esac
# What every host needs besides: iptables (the agent guards a container's outside connections with it),
# nsenter (util-linux), gcc and libc6-dev (the CRIU socket check below is built here), Debian's keyring (the
# CRIU side-load). criu from the distribution too: it pulls the right runtime deps where it works.
PKGS=("${ENGINE_PKGS[@]}" iproute2 iptables util-linux gcc libc6-dev tar ca-certificates debian-archive-keyring criu)
# Only the tests, the demo and the local stack use these: never on a deployment's host.
DEV_PKGS=(nats-server busybox-static redis-tools libmemcached-tools python3 fonts-dejavu-core)
[ "$DEV_MACHINE" = 1 ] && PKGS+=("${DEV_PKGS[@]}")
if [ "${1:-}" = --list-packages ]; then
  printf '%s\n' "${PKGS[@]}"
  exit 0
fi
[ "$#" -eq 0 ] || die "usage: host-setup.sh [--list-packages]"

[ "$(id -u)" = 0 ] || die "must run as root (CRIU checkpointing of rootful containers needs it)"
command -v apt-get >/dev/null || die "apt-get not found: only Debian-family hosts are supported"

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "installed: ${missing[*]}"
else
  say "skip: apt packages already installed (${PKGS[*]})"
fi

if [ "$DEV_MACHINE" = 1 ]; then
  # redis-tools and libmemcached-tools are the clients of the real-server test images
  # (infra/images/build-server-images.ts), run from the host in a container's network namespace. Only the
  # clients: redis-server or memcached on the host would start a service here (the images carry the servers,
  # unpacked with dpkg-deb -x, which installs nothing on the host).
  for server in redis-server memcached; do
    if dpkg-query -W -f='${Status}' "$server" 2>/dev/null | grep -q 'install ok installed'; then
      say "WARNING: $server is installed on this host (not by this script); it may run a service next to the test containers"
    fi
  done
else
  say "skip: test-only tools (${DEV_PKGS[*]}; development machines only: UMS_DEV_MACHINE=1)"
fi

# --- 2. CRIU >= 4.1 -------------------------------------------------------------------------------
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
criu_version_of() { "$@" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1; }
# The socket check (infra/criu/socket-check.sh) is installed where agents find it too: their capability
# probe runs it, and the planner refuses a host whose CRIU cannot dump a network service.
UMS_LIBEXEC="${UMS_LIBEXEC:-/usr/local/libexec/ums}"
SOCKET_CHECK="$UMS_LIBEXEC/criu-socket-check"
mkdir -p "$UMS_LIBEXEC"
if [ ! -x "$UMS_LIBEXEC/ums-socket-holder" ] || [ "$REPO_DIR/infra/criu/socket-check.c" -nt "$UMS_LIBEXEC/ums-socket-holder" ]; then
  gcc -O2 -Wall -o "$UMS_LIBEXEC/ums-socket-holder.tmp" "$REPO_DIR/infra/criu/socket-check.c" || die "cannot build the CRIU socket check"
  mv "$UMS_LIBEXEC/ums-socket-holder.tmp" "$UMS_LIBEXEC/ums-socket-holder"
fi
install -m 0755 "$REPO_DIR/infra/criu/socket-check.sh" "$SOCKET_CHECK"

criu_ok() { # $@ = criu command; version, `criu check`, then a real dump and restore of TCP sockets
  local v; v="$(criu_version_of "$@")"
  [ -n "$v" ] && version_ge "$v" "$MIN_CRIU" && "$@" check >/dev/null 2>&1 && "$SOCKET_CHECK" "$@" >/dev/null 2>&1
}

WRAPPER="$UMS_WRAPPER_DIR/criu"
LOADER="$UMS_PREFIX/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"

# The wrapper is ours only if it carries our marker; never overwrite a foreign binary.
if [ -x "$WRAPPER" ] && grep -q 'ums-criu-wrapper' "$WRAPPER" 2>/dev/null && criu_ok "$WRAPPER"; then
  say "skip: CRIU wrapper $WRAPPER works (criu $(criu_version_of "$WRAPPER"))"
elif [ "${UMS_FORCE_SIDELOAD:-0}" != 1 ] && criu_ok /usr/sbin/criu; then
  say "skip: distribution criu $(criu_version_of /usr/sbin/criu) passes 'criu check' and the socket check"
else
  dv="$(criu_version_of /usr/sbin/criu || true)"
  say "distribution criu ${dv:-absent} is older than $MIN_CRIU or cannot dump sockets here: side-loading from Debian $UMS_CRIU_SUITE into $UMS_PREFIX"
  [ "$(dpkg --print-architecture)" = amd64 ] || die "side-load recipe only verified for amd64"
  sideloaded="$(criu_version_of "$LOADER" --library-path "$UMS_PREFIX/usr/lib/x86_64-linux-gnu" "$UMS_PREFIX/usr/sbin/criu" 2>/dev/null || true)"
  if [ -n "$sideloaded" ] && ! version_ge "$sideloaded" "$MIN_CRIU"; then
    say "removing the side-loaded criu $sideloaded from $UMS_PREFIX: older than $MIN_CRIU"
    rm -rf "$UMS_PREFIX"
  fi
  if [ ! -x "$UMS_PREFIX/usr/sbin/criu" ] || [ ! -e "$LOADER" ]; then
    # forky is Debian's moving testing suite: names can change under us, and apt says which one is gone.
    CRIU_PKGS=(criu libcompel1 libbsd0 libc6 libffi8 libgmp10 libgnutls30t64 libhogweed6t64 libidn2-0
               libjansson4 libmd0 libmnl0 libnet9 libnettle8t64 libnftables1 libnftnl11 libnl-3-200
               libp11-kit0 libprotobuf-c1 libtasn1-6 libunistring5 libuuid1 libxtables12)
    sideload_debs "$UMS_CRIU_SUITE" "$UMS_PREFIX" "${CRIU_PKGS[@]}" ||
      die "cannot download CRIU's packages from Debian $UMS_CRIU_SUITE (a package above was renamed or dropped there?)"
    say "unpacked ${#CRIU_PKGS[@]} packages into $UMS_PREFIX"
  else
    say "skip: $UMS_PREFIX already holds a side-loaded criu"
  fi
  mkdir -p "$UMS_WRAPPER_DIR"
  cat >"$WRAPPER.tmp" <<WRAP
#!/bin/sh
# ums-criu-wrapper: runs Debian $UMS_CRIU_SUITE's criu with its own glibc, side by side with the host's.
exec "$LOADER" --library-path "$UMS_PREFIX/usr/lib/x86_64-linux-gnu" "$UMS_PREFIX/usr/sbin/criu" "\$@"
WRAP
  chmod 0755 "$WRAPPER.tmp"
  mv "$WRAPPER.tmp" "$WRAPPER"
  v="$(criu_version_of "$WRAPPER")"
  version_ge "${v:-0}" "$MIN_CRIU" || die "Debian $UMS_CRIU_SUITE's criu is ${v:-unusable}, older than $MIN_CRIU: set UMS_CRIU_SUITE to a suite that has $MIN_CRIU or newer (sid)"
  "$WRAPPER" check >/dev/null 2>&1 || { "$WRAPPER" check || true; die "side-loaded criu $v fails 'criu check'"; }
  "$SOCKET_CHECK" "$WRAPPER" || die "side-loaded criu $v cannot dump and restore TCP sockets on this kernel (above: CRIU's reason)"
  say "installed CRIU wrapper $WRAPPER (criu $v): criu check looks good; $("$SOCKET_CHECK" "$WRAPPER")"
fi

# runc looks criu up through PATH; the agent's Podman service and conmon must see the wrapper first.
# conmon_env_vars in infra/podman/containers.conf pins that PATH for conmon; check the same order here.
SERVICE_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
first="$(PATH="$SERVICE_PATH" command -v criu || true)"
if [ -x "$WRAPPER" ]; then
  case ":$SERVICE_PATH:" in
    *":$UMS_WRAPPER_DIR:"*) [ "$first" = "$WRAPPER" ] || die "criu in service PATH resolves to $first, not $WRAPPER" ;;
    *) say "WARNING: $UMS_WRAPPER_DIR is not in the service PATH ($SERVICE_PATH); start Podman with PATH=$UMS_WRAPPER_DIR:\$PATH" ;;
  esac
fi
say "criu used by runc under the service PATH: ${first:-none} ($(criu_version_of "${first:-/nonexistent}" || echo '?'))"

if [ "$UMS_ENGINE" = podman ]; then
  # --- 3. post-copy: the runtime shim Podman calls for runc (agents/post-copy/runc-shim) -----------
  # containers.conf lists it before runc itself, so every container, old or new, gets it; it is runc, unchanged,
  # for any container the agent is not migrating post-copy. A lazy dump keeps memory in pipes larger than
  # the 1 MiB default (docs/design/post-copy.md §0).
  install -m 0755 "$REPO_DIR/agents/post-copy/runc-shim" "$UMS_LIBEXEC/runc-shim"
  if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then sysctl -q -w fs.pipe-max-size=4194304; fi
  say "installed the runtime shim $UMS_LIBEXEC/runc-shim; fs.pipe-max-size $(cat /proc/sys/fs/pipe-max-size)"

  # --- 4. checks Podman depends on ----------------------------------------------------------------
  CONF="$REPO_DIR/infra/podman/containers.conf"
  [ -f "$CONF" ] || die "missing $CONF (it ships with the repository)"
  if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] && grep -q '^cgroup_manager *= *"systemd"' "$CONF"; then
    die "$CONF uses the systemd cgroup manager but systemd is not PID 1"
  fi
  hard_nofile="$(ulimit -Hn)"
  if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt 1024 ]; then
    die "hard nofile limit $hard_nofile is below the containers' 1024 in $CONF"
  fi
  say "ok: podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), hard nofile $hard_nofile"
  say "agents start Podman with CONTAINERS_CONF=$CONF and PATH=$SERVICE_PATH"
else
  # Docker moves containers stop-and-copy (the runtime shim is Podman's): no shim, no larger pipes. Its
  # containerd runs runc, which finds the criu wrapper through the service PATH checked above.
  say "ok: docker.io $(dpkg-query -W -f='${Version}' docker.io), runc $(runc --version | awk 'NR==1{print $3}'); dockerd needs \"experimental\": true and /etc/criu/runc.conf (tcp-established, file-locks)"
fi
[ "$DEV_MACHINE" != 1 ] || say "nats-server $(nats-server --version 2>&1 | awk '{print $NF}') for the local stack"

# --- 5. containerd 2.x for the simulated Kubernetes nodes (infra/containerd-host.ts) ----------------
# The CRI checkpoint (CheckpointContainer, which the kubelet's checkpoint API calls) and restore through CRI
# came with containerd 2.0; Debian 12 has 1.6, which the Docker hosts keep using. Debian sid's containerd
# (a Go binary needing only glibc >= 2.34) runs side by side from its own prefix: containerd, ctr and
# containerd-shim-runc-v2; runc stays the machine's.
UMS_CONTAINERD2_PREFIX="${UMS_CONTAINERD2_PREFIX:-/opt/ums/containerd2}"
UMS_CONTAINERD2_SUITE="${UMS_CONTAINERD2_SUITE:-sid}"
MIN_CONTAINERD2="2.1"
containerd2_version() { "$UMS_CONTAINERD2_PREFIX/usr/bin/containerd" --version 2>/dev/null | awk '{print $3}' | sed 's/[+~].*//'; }
containerd2_ok() {
  local v; v="$(containerd2_version)"
  [ -n "$v" ] && version_ge "$v" "$MIN_CONTAINERD2" &&
    [ -x "$UMS_CONTAINERD2_PREFIX/usr/bin/containerd-shim-runc-v2" ] && [ -x "$UMS_CONTAINERD2_PREFIX/usr/bin/ctr" ]
}
if [ "$DEV_MACHINE" != 1 ]; then
  # A deployment host runs its own engine; only the development machine simulates CRI nodes (infra/setup.sh).
  say "skip: containerd 2 for the simulated CRI nodes (development machines only: UMS_DEV_MACHINE=1)"
elif containerd2_ok; then
  say "skip: containerd $(containerd2_version) already side-loaded in $UMS_CONTAINERD2_PREFIX"
else
  [ "$(dpkg --print-architecture)" = amd64 ] || die "containerd side-load only verified for amd64"
  say "side-loading containerd from Debian $UMS_CONTAINERD2_SUITE into $UMS_CONTAINERD2_PREFIX"
  # Unpack into a fresh directory and swap it in whole: an older or half-unpacked prefix never mixes in.
  rm -rf "$UMS_CONTAINERD2_PREFIX.new"
  sideload_debs "$UMS_CONTAINERD2_SUITE" "$UMS_CONTAINERD2_PREFIX.new" containerd ||
    die "cannot download containerd from Debian $UMS_CONTAINERD2_SUITE"
  rm -rf "$UMS_CONTAINERD2_PREFIX"
  mv "$UMS_CONTAINERD2_PREFIX.new" "$UMS_CONTAINERD2_PREFIX"
  containerd2_ok || die "Debian $UMS_CONTAINERD2_SUITE's containerd is $(containerd2_version || echo unusable), need >= $MIN_CONTAINERD2 with ctr and containerd-shim-runc-v2"
  say "installed containerd $(containerd2_version) in $UMS_CONTAINERD2_PREFIX (not on PATH; the machine's containerd stays $(containerd --version 2>/dev/null | awk '{print $3}'))"
fi
say "done"
