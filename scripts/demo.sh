#!/usr/bin/env bash
# `make demo`: the side-by-side comparison of the modes when `pktlb compare` exists;
# until then, replay a sample capture through every mode and say what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PKTLB=.venv/bin/pktlb
if $PKTLB compare --help >/dev/null 2>&1; then
  exec $PKTLB compare "$@"
fi
echo "pktlb compare (issue 7) is not built yet: showing the offline data path instead."
mkdir -p out
.venv/bin/python scripts/sample_pcap.py out/sample.pcap
for mode in nat fullnat tunnel dsr; do
  echo "== $mode"
  $PKTLB replay -c examples/$mode.toml out/sample.pcap -o out/$mode.pcap
done
echo "Rewritten frames per mode: out/{nat,fullnat,tunnel,dsr}.pcap (open them in Wireshark)."
