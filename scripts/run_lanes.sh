#!/usr/bin/env bash
# `make reports`: run the study notebooks in two lanes side by side, one CPU core each, then render
# the index. Lane "worlds" holds the notebooks that share the synthetic world's pretrained models
# (00-03: one lane, so a model is pretrained once and then read from the cache); lane "data" holds
# the real-data studies (04 ChFinAnn, 05 FewAsp), which share nothing with it.
#   usage: scripts/run_lanes.sh EPI PROFILE "LANE_WORLDS_NOTEBOOKS" "LANE_DATA_NOTEBOOKS"
# Each lane's lines carry its name; a failed notebook fails `make reports` after both lanes finish.
set -uo pipefail
epi=$1; profile=$2; worlds=$3; data=$4
lane() {  # lane NAME NOTEBOOK...
  local name=$1; shift
  (
    status=0
    for nb in "$@"; do
      echo "== $nb ($profile)"
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$epi" run "$nb" --profile "$profile" || status=1
    done
    exit $status
  ) 2>&1 | sed -u "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}
started=$(date +%s)
lane worlds $worlds & a=$!
lane data $data & b=$!
status=0
wait $a || status=1
wait $b || status=1
"$epi" report
echo "reports/index.html written ($(( ($(date +%s) - started) / 60 )) min for both lanes)"
exit $status
