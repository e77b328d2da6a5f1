"""The dev set of the question-bank experiments: the authored questions added after 58009e1, with the question bank
(``assistants.domains.read_qa``) made to hold only the older ones, so no sibling of a dev question is in it."""
import json
import subprocess
from pathlib import Path

from assistants import domains as D

BEFORE = "58009e1"


def old_rows(domain: str) -> list[dict]:
    rows = []
    for path in sorted((D.QA_DIR / domain).glob("*.jsonl")):
        rel = path.relative_to(Path.cwd()) if path.is_absolute() else path
        try:
            text = subprocess.run(["git", "show", f"{BEFORE}:{rel}"], capture_output=True, text=True, check=True).stdout
        except subprocess.CalledProcessError:
            continue
        rows += [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows


def dev_questions() -> list[tuple[str, str, str, list[str], list[str]]]:
    """(domain, id, question, facts, docs) of the newer authored questions; from here on the bank holds the older."""
    real = D.read_qa
    olds = {dom: old_rows(dom) for dom in ("legal", "medical", "support")}
    D.read_qa = lambda domain, qa_dir=D.QA_DIR: olds.get(domain, [])
    out = []
    for dom in ("legal", "medical", "support"):
        seen = {r["question"] for r in olds[dom]}
        out += [(dom, f"{dom}-new{i}", row["question"], row["facts"], [row["doc"]])
                for i, row in enumerate(real(dom)) if row["question"] not in seen]
    return out
