#!/usr/bin/env bash
# `make demo`: pktlb's main job, `pktlb compare` with its defaults: every forwarding mode (nat, fullnat,
# tunnel, dsr) on the same workload, through the pktlb engine and the kernel baseline where the kernel
# can do the mode.  Prints the table and where the report, charts and captures are; every lab it builds
# is removed again (compare does it after each mode; the trap below is the safety net).
# Extra arguments go to `pktlb compare` (e.g. `scripts/demo.sh --modes dsr,tunnel --duration 3`).
set -euo pipefail
cd "$(dirname "$0")/.."
PKTLB=.venv/bin/pktlb
PREFIX=pktlb-demo-

if [ "$(id -u)" != 0 ]; then
  echo "make demo builds network namespaces: run it as root (sudo make demo)" >&2
  exit 1
fi
if ip netns list 2>/dev/null | grep -q "^$PREFIX"; then
  echo "a lab with prefix $PREFIX is already there: remove it with '$PKTLB lab down --prefix $PREFIX'" >&2
  exit 1
fi
cleanup() { $PKTLB lab down --prefix "$PREFIX" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "pktlb compare: one lab per mode and engine (the L4 modes, then the L7 proxies), the same bounded workload in each (about 5 minutes)."
echo "Progress lines below; the tables follow at the end."
echo "Watch the pktlb engine live meanwhile: in a second terminal run"
echo "  sudo $PKTLB dashboard --lab $PREFIX     and open http://127.0.0.1:9180/ (each mode's lab appears as it runs)"
echo
$PKTLB compare --prefix "$PREFIX" "$@"
