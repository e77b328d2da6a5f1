"""quote_budget.py OPENINGS.tsv: how many three-quote openings (open_all.py's) do not fit in QUOTE_SHARE of the
answer's 200 tokens, counted with the chat template's wrapping (as before) and alone (as now), and how many of those
lose a key fact when their last quote is dropped."""
import re, sys
from transformers import AutoTokenizer
from assistants.evaluation.suite import fact_recall
from assistants.settings import Settings

tok = AutoTokenizer.from_pretrained(str(Settings.from_env().home / "models" / "smollm2-135m-instruct"))
def wrapped(text):
    ids = tok.apply_chat_template([{"role": "assistant", "content": text}], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
room = 0.75 * 200
for name, count in (("with the wrapping", wrapped), ("alone", lambda t: len(tok(t, add_special_tokens=False)["input_ids"]))):
    over = [r for r in rows if count(r[7]) > room]
    lost = [r[1] for r in over if fact_recall(r[7], eval(r[6])) > fact_recall(" ".join(re.split(r"(?<=\]\.) ", r[7])[:-1]), eval(r[6]))]
    print(f"{name}: {len(over)} of {len(rows)} do not fit, {len(lost)} lose a key fact: {' '.join(lost)}")
