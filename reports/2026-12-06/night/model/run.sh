#!/bin/bash
# Every question of the ten sets with the model, shipped (adapter+retrieval) and base+retrieval, on the final code
# of the session, written beside this script (../../fresh8/final/run.sh does the work).
cd "$(dirname "$0")/../../../.." || exit 1
exec reports/2026-12-06/fresh8/final/run.sh reports/2026-12-06/night/model
