#!/bin/bash
# The sentence ranker on every authored question (data/qa), then one with 20% of documents held out, then the
# quote gate fitted on the held-out ranker's scores (as the shipped ranker and gate were made).
set -e
cd "$(dirname "$0")/../../.."
export PYTHONPATH=.
date
.venv/bin/python -m assistants train ranker
date
.venv/bin/python -m assistants train ranker --holdout 0.2
date
.venv/bin/python -m assistants train gate
date
