"""probe.py OUT.txt: everyday short questions, as the chat path routes and quotes them (no model): the route, the
flags, the first passage given and the 3-sentence opening. Written by the team on 2026-12-06 as people ask them
(none is an eval, training or routing question); read, not scored."""
import sys

from assistants import provenance, redflags
from assistants.domains import load_all
from assistants.embeddings import Embedder
from assistants.retrieval import KnowledgeBase, Retriever
from assistants.router import train_for
from assistants.settings import Settings

QUESTIONS = [
    "how long does my landlord have to protect my deposit?",
    "can my landlord keep my deposit for cleaning",
    "how much notice do i have to give my landlord to leave",
    "i want to move out, how much notice do i give",
    "can my employer fire me without a reason",
    "my employer hasn't paid me for 2 months what can i do",
    "do i get paid holiday",
    "how do i write a will without a solicitor",
    "who gets my house if i die without a will",
    "what happens if i get 12 points on my licence",
    "how long does a ccj stay on my record",
    "I bought a washing machine from a UK shop three weeks ago and it leaks. Do I get a full refund?",
    "my new fridge from a retailer stopped working after 20 days, what are my rights?",
    "how often can I take ibuprofen",
    "how long between ibuprofen doses",
    "I've got 500mg paracetamol tablets. How many can I take in a day?",
    "how long does a cold last",
    "can i drink alcohol on antibiotics",
    "is it safe to take paracetamol when pregnant",
    "how long is flu contagious",
    "what should my blood pressure be",
    "how do i treat a burn",
    "I was charged twice for my order, how do I get my money back?",
    "how long do refunds take",
    "can i return something i bought in the sale",
    "my parcel hasn't arrived and it's been a week",
    "do you deliver on sundays",
    "how do i change my delivery address",
    "I bought a kettle from you and it stopped working after 20 days, can I get a refund?",
    "The shop says my order is delayed, why?",
]

s = Settings.from_env()
domains = load_all(s)
embedder = Embedder.for_settings(s)
router = train_for(s, embedder, domains)
retriever = Retriever(KnowledgeBase(s, domains, embedder))
detector = redflags.build(domains, embedder, s.domains_dir, s.home / "cache")
with open(sys.argv[1], "w") as out:
    for q in QUESTIONS:
        route = router.route(q)
        domain = route.domain
        flags = detector.detect(q)
        if domain not in domains:
            out.write(f"Q: {q}\n  route: {domain}\n\n")
            continue
        region = provenance.place_asked(q)
        prefer, sure = redflags.documents(flags, domain), redflags.confirmed(flags, domain)
        passages = retriever.retrieve(domain, q, region=region, prefer=prefer, sure=sure)
        opening = retriever.opening(domain, q, passages, 3, region, prefer)
        out.write(f"Q: {q}\n  route: {domain} ({route.confidence:.0%})  flags: {[f.rule.name for f in flags]}\n"
                  f"  first passage: {passages[0].id if passages else '-'}\n  opening: {opening}\n\n")
