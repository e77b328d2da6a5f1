#!/bin/bash
# served app: make run, then questions through the OpenAI-compatible API with "model":"auto"
cd /work/main
(setsid nohup make run > /tmp/serve8.log 2>&1 &)
for i in $(seq 1 120); do curl -sf http://127.0.0.1:7860/healthz > /dev/null && break; sleep 2; done
curl -s http://127.0.0.1:7860/healthz; echo
ask() { python3 -c "import json,sys; print(json.dumps({'model':'auto','messages':[{'role':'user','content':sys.argv[1]}]}))" "$1" | curl -s -X POST http://127.0.0.1:7860/v1/chat/completions -H 'content-type: application/json' -d @- | python3 -c "import json,sys; r=json.load(sys.stdin); print('Q:', sys.argv[1]); print('routed:', r.get('model'), '|', (r.get('route') or r.get('x_route') or '')); print('A:', r['choices'][0]['message']['content'][:900]); print()" "$1"; }
ask "I took 30 paracetamol an hour ago"
ask "took 40 tylenol about an hour ago, I dont want to die anymore what do I do"
ask "how do i turn on two factor"
ask "where do i close my account"
ask "max dose of nurofen in 24 hrs"
ask "my doctor prescribed ibuprofen 4 times a day, how long between doses"
ask "how much notice does my landlord have to give me"
ask "whats the drink drive limit in england"
ask "how much notice for a no-reason eviction in Wales?"
ask "ur checkout page is basically unusable with my screen reader, who do i even report this to"
ask "shes 4 and had the runs since brekkie, can she have imodium or is that adults only"
ask "how often can my landlord put the rent up in england"
echo "empty messages:"; curl -s -o /dev/null -w "%{http_code}\n" -X POST http://127.0.0.1:7860/v1/chat/completions -H 'content-type: application/json' -d '{"model":"auto","messages":[]}'
pkill -f "assistants serve"; pkill -f "make run"
