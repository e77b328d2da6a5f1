#!/bin/bash
# served app: make run, then questions (these, or the arguments) through the OpenAI-compatible API with "model":"auto"
cd /work/main
(setsid nohup make run > /tmp/serve.log 2>&1 &)
for i in $(seq 1 120); do curl -sf http://127.0.0.1:7860/healthz > /dev/null && break; sleep 2; done
curl -s http://127.0.0.1:7860/healthz; echo
ask() { python3 -c "import json,sys; print(json.dumps({'model':'auto','messages':[{'role':'user','content':sys.argv[1]}]}))" "$1" | curl -s -X POST http://127.0.0.1:7860/v1/chat/completions -H 'content-type: application/json' -d @- | python3 -c "import json,sys; r=json.load(sys.stdin); print('Q:', sys.argv[1]); print('routed:', r.get('model'), '|', (r.get('route') or r.get('x_route') or '')); print('A:', r['choices'][0]['message']['content'][:900]); print()" "$1"; }
if [ $# -gt 0 ]; then  # the questions given (reports/2026-12-06/fresh8/served-app.sh), else these
  for q in "$@"; do ask "$q"; done
else
  ask "do i get paid holiday"
  ask "how many paracetamol can i take in 24 hours"
  ask "how long do i have to wait between tylenol doses"
  ask "how much exercise should i do a week"
  ask "how much ibuprofen can i give my son"
  ask "do you deliver on bank holidays"
  ask "I bought a washing machine from a UK shop three weeks ago and it leaks. Do I get a full refund?"
  ask "My husband is on gliclazide and feels shaky and sweaty. How do you treat a hypo?"
  ask "I took 30 paracetamol an hour ago"
fi
echo "empty messages:"; curl -s -o /dev/null -w "%{http_code}\n" -X POST http://127.0.0.1:7860/v1/chat/completions -H 'content-type: application/json' -d '{"model":"auto","messages":[]}'
pkill -f "assistants serve"; pkill -f "make run"
