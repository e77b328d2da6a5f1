"""open_dev_v.py OUT.tsv with VOUCH=x: ../../2026-12-06/night/bank/open_dev.py (the dev set's openings, no model) with
retrieval.asked_vouch set to x in every domain, the YAML unchanged."""
import os
import runpy
import sys
from pathlib import Path

import assistants.domains as D

_load_all = D.load_all


def load_all(*args, **kwargs):
    domains = _load_all(*args, **kwargs)
    for spec in domains.values():
        if "VOUCH" in os.environ:
            spec.retrieval.asked_vouch = float(os.environ["VOUCH"])
    return domains


D.load_all = load_all
script = Path(__file__).parents[2] / "2026-12-06" / "night" / "bank" / "open_dev.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
