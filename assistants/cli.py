"""``python -m assistants ...``: thin commands over the same services the web app uses.

Errors the user can fix print one line and exit with code 2; never a trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from .domains import load_all, load_domains, unknown_domain
from .errors import AssistantsError, InvalidInput
from .settings import Settings, settings_table


def _domains(settings: Settings):
    return load_all(settings)  # the shipped specialists, then those created in the studio


def cmd_ask(args, settings: Settings) -> int:
    from .chat import ChatRequest
    from .provenance import check_region
    from .safety import check_message
    from .services import build_chat

    check_region(args.region)
    check_message(args.question, settings.max_message_chars)  # before loading anything: fail fast
    chat = build_chat(settings, use_router=args.domain == "auto", use_retrieval=not args.no_retrieval)
    request = ChatRequest(message=args.question, domain=args.domain, max_new_tokens=args.max_tokens,
                          use_retrieval=not args.no_retrieval, region=check_region(args.region))
    if args.json:
        print(json.dumps(chat.ask(request).to_json(include_prompt=args.show_prompt), ensure_ascii=False, indent=2))
        return 0
    answer = None
    printed = 0
    for answer in chat.stream(request):
        sys.stdout.write(answer.text[printed:])
        sys.stdout.flush()
        printed = len(answer.text)
    print(f"\n\n-- {answer.domain} · adapter: {answer.adapter['label']}")
    listed: set[str] = set()
    for i, p in enumerate(answer.sources, 1):
        print(f"[{i}] {p.title} [{p.id}] score {p.score:.2f}{' (cited)' if p.cited else ''}"
              + (f" · {', '.join(p.jurisdictions)}" if p.jurisdictions else "")
              + (f" · reviewed {p.reviewed}{' (due for review)' if p.due_for_review else ''}" if p.reviewed else ""))
        if p.title not in listed:  # a document's sources once, under its first passage
            listed.add(p.title)
            for source in p.sources:
                print(f"      {source['name']}{': ' + source['url'] if source.get('url') else ''}")
    for notice in answer.notices:
        print(f"note: {notice}")
    if answer.disclaimer:
        print(answer.disclaimer)
    return 0


def cmd_route(args, settings: Settings) -> int:
    from dataclasses import asdict

    from .embeddings import Embedder
    from .router import train_for

    router = train_for(settings, Embedder.for_settings(settings), _domains(settings))
    if args.question:
        route = router.route(args.question)
        if args.json:
            print(json.dumps({"question": args.question, **asdict(route)}))
        else:
            print(f"{route.domain} ({route.confidence:.0%})  " + "  ".join(f"{k}={v:.2f}" for k, v in route.scores.items()))
        return 0
    questions = [line.strip() for line in sys.stdin if line.strip()]
    for question, route in zip(questions, router.route_many(questions)):
        print(json.dumps({"question": question, "domain": route.domain, "confidence": route.confidence,
                          "scores": route.scores}), flush=True)
    return 0


def cmd_search(args, settings: Settings) -> int:
    from dataclasses import asdict

    from .embeddings import Embedder
    from .retrieval import KnowledgeBase

    kb = KnowledgeBase(settings, _domains(settings), Embedder.for_settings(settings))
    passages = kb.search(args.domain, args.query, k=args.k, threshold=0.0 if args.all else None)
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(p).items() if k in ("id", "title", "source", "score", "text")}
                          for p in passages], ensure_ascii=False, indent=2))
        return 0
    if not passages:
        print("no passage passes the domain's score threshold (use --all to see the closest ones)")
    for p in passages:
        print(f"{p.score:.3f}  {p.title}  [{p.id}]\n       {p.text[:160].replace(chr(10), ' ')}...")
    return 0


def cmd_ingest(args, settings: Settings) -> int:
    from .embeddings import Embedder
    from .retrieval import KnowledgeBase

    domains = _domains(settings)
    if args.paths and not args.domain:
        raise AssistantsError(f"with PATHs, name the domain they belong to: --domain {'|'.join(domains)}")
    kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
    targets = [args.domain] if args.domain else [d for d in domains if settings.knowledge_for(d).is_dir()]
    failed = 0
    for domain in targets:
        report = kb.ingest(domain, [Path(p) for p in args.paths] if args.paths else None)
        print(report.summary())
        failed += len(report.failed)
    return 1 if failed else 0


def _eval_safety(args, settings: Settings) -> int:
    """Red-flag recall per category on the held-out split (other words than training), false alarms, misses."""
    from . import redflags
    from .embeddings import Embedder
    from .evaluation.specialization import default_out

    domains = _domains(settings)
    detector = redflags.build(domains, Embedder.for_settings(settings), settings.domains_dir, settings.home / "cache")
    result = redflags.evaluate(detector, settings.domains_dir / "redflags", ordinary_questions(list(domains)))
    floor = redflags.evaluate(redflags.RedFlagDetector.patterns_only(domains), settings.domains_dir / "redflags")
    result["patterns_only"] = {"groups": floor["groups"], "false_alarm_rate": floor["false_alarm_rate"]}
    out = Path(args.out) if args.out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    text = ("# Red flags on held-out messages\n\nDetector: patterns + classifier on MiniLM embeddings and word n-grams "
            f"(threshold {detector.threshold}; a lone sentence of a longer message {redflags.SENTENCE_THRESHOLD}). Patterns alone: recall "
            + ", ".join(f"{d} {g['recall']:.0%}" for d, g in floor["groups"].items())
            + f", false alarms {floor['false_alarm_rate']:.0%}.\n\n" + redflags.markdown(result) + "\n")
    (out / "safety.md").write_text(text, encoding="utf-8")
    (out / "safety.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, indent=2) if args.json else text + f"\nreport: {out}/safety.md")
    return 0


def cmd_knowledge(args, settings: Settings) -> int:
    """``knowledge check``: missing front matter fields, documents past their review date, figures that disagree."""
    from .provenance import check_documents, check_markdown

    known = _domains(settings)
    if args.domain and args.domain not in known:
        raise unknown_domain(args.domain, known)
    domains = [args.domain] if args.domain else list(known)
    paths = {d: sorted(settings.knowledge_for(d).glob("*.md")) for d in domains}
    result = check_documents(paths)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else check_markdown(result))
    return 0 if result["ok"] else 1


def cmd_eval(args, settings: Settings) -> int:
    if args.what == "routing":
        from .embeddings import Embedder
        from .router import evaluate, format_report, train_for

        routing_dir = settings.domains_dir / "routing"
        router = train_for(settings, Embedder.for_settings(settings), _domains(settings))
        result = evaluate(router, routing_dir)
        print(json.dumps(result, indent=2) if args.json else format_report(result))
        return 0
    if args.what == "safety":
        return _eval_safety(args, settings)
    if args.what == "specialization":
        from .generation.engine import Engine, run_in_thread
        from .evaluation.specialization import citation_rate, default_out, markdown_report, save_report, specialization

        domains = _domains(settings)
        engine = Engine.load(settings, {n: settings.adapter_for(n, s.adapter) for n, s in domains.items()})
        result = run_in_thread(specialization, engine, list(domains), limit=args.limit or 40, progress=not args.json)
        if args.citations:
            engine.start_scheduler(max_batch=8, max_queue=64)
            try:
                result["citation_rate"] = citation_rate(engine, list(domains), limit=args.citations, progress=not args.json)
            finally:
                engine.scheduler.close()
        out = Path(args.out) if args.out else default_out()
        save_report(result, out)
        print(json.dumps(result, indent=2) if args.json else markdown_report(result) + f"\n\nreport: {out}/specialization.(md|json|png)")
        return 0
    if args.what == "all":
        from .evaluation import suite as eval_suite
        from .evaluation.specialization import default_out
        from .services import build_chat

        known = [*eval_suite.CONFIGS, eval_suite.CANDIDATE, eval_suite.CANDIDATE_NOQUOTE]
        wrong = [c for c in args.configs or [] if c not in known]
        if wrong:
            raise AssistantsError(f"unknown configuration {wrong[0]!r}; choose from {', '.join(known)}")
        chat = build_chat(settings, batching=True)
        domains = args.domains or list(chat.domains)
        unknown = [d for d in domains if d not in chat.domains]
        if unknown:
            raise unknown_domain(unknown[0], chat.domains)
        out = Path(args.out) if args.out else default_out()
        questions = Path(args.questions) if args.questions else eval_suite.EVAL_DIR
        if not any((questions / f"{d}.jsonl").is_file() for d in domains):
            raise AssistantsError(f"no question files <domain>.jsonl in {questions}: give a folder that holds them")
        report = eval_suite.run(chat, domains, args.limit, out, questions, progress=not args.json, only=args.configs)
        print(json.dumps(report, indent=2) if args.json else eval_suite.markdown(report) + f"\nreport: {out}/eval.md")
        return 0
    raise AssistantsError(f"unknown evaluation {args.what!r}")


def cmd_train(args, settings: Settings) -> int:
    from .training.data import SFT_DIR, write_domain

    domains = _domains(settings)
    names = [args.domain] if args.domain else list(domains)
    for name in names:
        if name not in domains:
            raise unknown_domain(name, domains)
    if args.what == "prefs":
        from .feedback import FeedbackStore
        from .training.preferences import PrefOptions, train_prefs

        if not args.domain:
            raise AssistantsError(f"name the domain to train: --domain {'|'.join(domains)}")
        options = PrefOptions(**({"steps": args.max_steps} if args.max_steps else {}), **({"lr": args.lr} if args.lr else {}),
                              include_unreviewed=args.include_unreviewed)
        out = train_prefs(domains[args.domain], settings, FeedbackStore.from_settings(settings), options)
        print((out / "README.md").read_text())
        return 0
    if args.what == "ranker":
        from .training.ranker import RankerOptions, train_ranker

        if not 0 <= args.holdout <= 0.5:
            raise AssistantsError(f"--holdout is the share of documents kept out for measuring, 0 to 0.5; got {args.holdout}")

        if args.negatives is not None and not 1 <= args.negatives <= 8:
            raise AssistantsError(f"--negatives is how many of the miner's mistakes join each question, 1 to 8; "
                                  f"got {args.negatives}")
        options = RankerOptions(**{k: v for k, v in vars(args).items()
                                   if k in ("lr", "rank", "seed", "negatives") and v is not None},
                                **({"epochs": int(args.epochs)} if args.epochs else {}), holdout=args.holdout)
        out = train_ranker(settings, domains, options, mine_with=Path(args.mine_with) if args.mine_with else None)
        print((out / "README.md").read_text())
        return 0
    if args.what == "gate":
        from .training.gate import train_gate

        print(f"saved {train_gate(settings, domains, Path(args.ranker) if args.ranker else None)}")
        return 0
    if args.what == "data":
        for name in names:
            counts = write_domain(domains[name], settings, SFT_DIR, args.seed)
            print(f"{name}: {counts['train']} train / {counts['test']} test examples -> {SFT_DIR / name}")
        return 0
    from .training.sft import SFTOptions, train_sft

    if not args.domain:
        raise AssistantsError(f"name the domain to train: --domain {'|'.join(domains)}")
    options = SFTOptions(**{k: v for k, v in vars(args).items()
                            if k in ("epochs", "lr", "rank", "alpha", "batch_size", "max_steps", "seed") and v is not None})
    out = train_sft(domains[args.domain], settings, options)
    print((out / "README.md").read_text())
    return 0


def _review(store, args) -> int:
    """Corrections become DPO "chosen" answers only once a person approved them."""
    for verdict, ids in (("approved", args.approve), ("rejected", args.reject)):
        for rating_id in ids:
            store.review(rating_id, verdict)
            print(f"rating {rating_id}: {verdict}")
    if args.approve or args.reject:
        return 0
    pending = [r for r in store.rated(args.domain) if r["correction"] and r["review"] == "pending"]
    for r in pending:
        print(f"#{r['id']}  answer {r['answer_id']}\n  answer:     {r['answer'][:300]}\n  correction: {r['correction'][:300]}\n")
    print(f"{len(pending)} corrections waiting for review in {args.domain}: "
          f"`feedback review --domain {args.domain} --approve ID ...` or `--reject ID ...`")
    return 0


def cmd_feedback(args, settings: Settings) -> int:
    from .feedback import FeedbackStore, format_stats

    store = FeedbackStore.from_settings(settings)
    if args.action == "round":
        return _round(store, args, settings)
    if args.action == "seed" and args.file:
        rows = _read_seed(Path(args.file))
        counts = store.load_seed(rows)
        print(f"{args.file}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        return 0
    if args.action == "seed":
        if not args.domain:
            raise InvalidInput("feedback seed needs --file SEED.jsonl (a rated set), or --domain D for simulated ratings")
        from .services import build_chat
        from .training.preferences import seed_feedback

        chat = build_chat(settings, use_router=False, batching=True)
        if args.domain not in chat.domains:
            raise unknown_domain(args.domain, chat.domains)
        counts = seed_feedback(chat, chat.store, args.domain, n=args.n)
        print(f"{args.domain}: {counts['up']} simulated thumbs up, {counts['down']} down (with corrections)")
        return 0
    if args.action == "stats":
        stats = store.stats()
        print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        return 0
    if args.action == "review":
        return _review(store, args)
    rows = store.seed_rows(args.domain) if args.format == "seed" else store.export(args.domain, args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} {args.format} rows for {args.domain} -> {out}")
    return 0


def _read_seed(path: Path) -> list[dict]:
    if not path.is_file():
        raise InvalidInput(f"no seed file at {path}: give a .jsonl written by `feedback export --format seed`")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path} line {n}: not JSON ({exc.msg})") from None
    return rows


def _round(store, args, settings: Settings) -> int:
    """export -> train -> evaluate -> blind pairs -> decide, resumable (see training/round.py)."""
    from dataclasses import replace

    from .embeddings import Embedder
    from .retrieval import KnowledgeBase
    from .services import build_chat
    from .training.preferences import PrefOptions, train_prefs
    from .training.round import FeedbackRound, RoundOptions

    domains = load_domains(settings.domains_dir)
    if args.domain not in domains:
        raise unknown_domain(args.domain, domains)
    kb = KnowledgeBase(settings, domains, Embedder.for_settings(settings))
    prefs = PrefOptions(**{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None})
    train = lambda check: train_prefs(domains[args.domain], settings, store, prefs, check=check, loss_gate=False)  # noqa: E731
    make_chat = lambda: build_chat(replace(settings, auto_ingest=False), use_router=False, batching=True)  # noqa: E731
    options = RoundOptions(win_share=args.win_share, min_ratings=args.min_ratings)
    folder = Path(args.folder) if args.folder else None
    rnd = FeedbackRound(args.domain, settings, store, options, kb=kb, folder=folder, train=train, make_chat=make_chat,
                        report_dir=Path(args.report) if args.report else None)
    if args.restart:
        rnd.restart()
    rnd.run()
    if "decide" in rnd.state:
        print(f"report: {rnd.write_report()}")
    for line in rnd.next_steps():
        print(line)
    return 0


def ordinary_questions(domains: list[str]) -> list[str]:
    """Everyday questions with no emergency in them: the eval's fact questions and the feedback round's questions."""
    from .evaluation.suite import EVAL_DIR, load_eval

    out = [c["question"] for d in domains for c in load_eval(d) if c["kind"] == "fact"]
    for d in domains:
        path = EVAL_DIR.parent / "feedback" / "questions" / f"{d}.jsonl"
        if path.is_file():
            out += [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


def _bench_cluster_env(settings: Settings) -> dict:
    """``bench load --replicas`` starts from this machine's converted model and embedder (converted here once)."""
    from .embeddings import prepare_onnx
    from .generation.engine import prepare_embedded_cache

    prepare_embedded_cache(settings.home)
    prepare_onnx(settings.home / "models")
    return {}


def cmd_bench(args, settings: Settings) -> int:
    from .evaluation import bench

    if args.what == "load":
        if args.replicas > 1:  # the scale-out setup: nginx, Postgres and a Chroma server, 1 replica then N
            result = bench.bench_load_replicas(args.replicas, clients=args.clients, seconds=args.seconds, warmup=args.warmup,
                                                 env=_bench_cluster_env(settings), prepared=settings.home)
            print(json.dumps(result, indent=2) if args.json else bench.format_load_replicas(result))
            return 0
        result = bench.bench_load(clients=args.clients, seconds=args.seconds, warmup=args.warmup, rate_limit=args.rate_limit)
        print(json.dumps(result, indent=2) if args.json else bench.format_load(result))
        return 0 if result["errors_5xx"] == 0 and result["hangs"] == 0 else 1
    if args.what == "studio":  # chat TTFT on a running server, idle and while a studio job trains
        if settings.operator is None:
            raise InvalidInput("bench studio calls the studio API: set ASSISTANTS_ADMIN=user:password as the server has it")
        questions = [q for s in _domains(settings).values() for q in s.examples[:2]][:6]
        result = bench.bench_studio(args.url, settings.operator, args.specialist, questions, steps=args.steps)
        print(json.dumps(result, indent=2) if args.json else bench.format_studio(result))
        return 0
    if args.what == "serve":
        from .services import build_chat

        chat = build_chat(settings, use_router=False)
        result = bench.bench_serve(chat.engine, bench.serve_prompts(chat), users=args.users, requests=args.requests,
                                   max_new_tokens=args.max_new_tokens, max_batch=max(args.users, 1))
        print(json.dumps(result, indent=2) if args.json else bench.format_serve(result))
        return 0
    from .embeddings import Embedder
    from .retrieval import KnowledgeBase

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # a scratch store: the bench never touches the real one
        scratch = Settings.from_env(home=Path(tmp), chroma_host="")  # embedded even with CHROMA_HOST set
        kb = KnowledgeBase(scratch, _domains(scratch), Embedder.for_settings(settings))
        result = bench.bench_retrieval(kb, target_chunks=args.chunks)
    print(json.dumps(result, indent=2) if args.json else
          f"chunks: {result['chunks']}  embeddings: {result['embedder']}  ingest: {result['ingest_chunks_per_s']} chunks/s "
          f"(target >= 150; {result['embedding_share']:.0%} of it embedding)  "
          f"query p50: {result['query_p50_ms']} ms (target < 30)  p95: {result['query_p95_ms']} ms\n"
          f"Chroma server (chroma run, HTTP on loopback), same {result['server_chunks']} chunks: query p50: "
          f"{result['server_query_p50_ms']} ms  p95: {result['server_query_p95_ms']} ms = {result['server_vs_embedded_p50']}x / "
          f"{result['server_vs_embedded_p95']}x the embedded store's; copied in at {result['server_write_chunks_per_s']} chunks/s "
          f"(writes only, vectors already made)\n"
          f"one chunk: {result['tokens_per_chunk']} tokens, {result['gflop_per_chunk']} GFLOP of MiniLM arithmetic; ingest ran "
          f"{result.get('achieved_gop_per_s')} GOP/s, 150 chunks/s would need {result['target_gop_per_s']} GOP/s; float32 matmul peak measured now: "
          f"{result['matmul_peak_gflop_per_s']} GFLOP/s")
    return 0


def cmd_adapters(args, settings: Settings) -> int:
    from . import adapters as registry

    domains = _domains(settings)
    if args.action == "list":
        data = registry.listing(settings.adapters_dir, list(domains),
                                {n: settings.adapter_for(n, s.adapter) for n, s in domains.items()})
        print(json.dumps(data, indent=2) if args.json else registry.format_listing(data))
        return 0
    if args.action == "vllm":
        return _vllm_command(args, settings, domains)
    if args.domain not in domains:
        raise unknown_domain(args.domain, domains)
    folder = settings.adapter_for(args.domain, domains[args.domain].adapter)
    if args.action == "promote":
        print(registry.promote(folder, args.version, force=args.force))
    else:
        print(registry.rollback(folder))
    print("A running app picks this up on its next request (no restart needed).")
    return 0


def _vllm_command(args, settings: Settings, domains) -> int:
    """Exit 1 when an adapter breaks vLLM's LoRA rules (the server would refuse to start with it)."""
    from . import adapters as registry

    model = args.model or str(settings.home.resolve() / "models" / "smollm2-135m-instruct")
    mount = (settings.adapters_dir, args.adapters_at) if args.adapters_at else None
    command, problems = registry.vllm_command(model, {n: settings.adapter_for(n, s.adapter) for n, s in domains.items()},
                                              settings.backend_model, mount=mount)
    for name, found in problems.items():
        print(f"# {name}: " + ("loads under vLLM's LoRA rules" if not found else "REFUSED: " + "; ".join(found)))
    print(command)
    print("# then run the app with ASSISTANTS_BACKEND=openai ASSISTANTS_BACKEND_URL=http://<server>:8000/v1 "
          "(and ASSISTANTS_BACKEND_LOAD_LORA=1 to follow promotions without restarting vLLM)")
    return 1 if any(problems.values()) else 0


class _NoEngine:
    """The studio from the CLI needs no model: the server loads a created specialist's adapters when it starts."""

    adapters: dict = {}

    def watch_domain(self, domain, path) -> None:
        pass

    unwatch_domain = refresh = watch_domain


def _offline_studio(settings: Settings):
    """The studio over this machine's files and store, without a server (a running one picks changes up at restart)."""
    from types import SimpleNamespace

    from .embeddings import Embedder
    from .retrieval import KnowledgeBase, Retriever
    from .studio import Studio

    domains = _domains(settings)
    chat = SimpleNamespace(settings=settings, domains=domains, engine=_NoEngine(), router=None,
                           retriever=Retriever(KnowledgeBase(settings, domains, Embedder.for_settings(settings))))
    return Studio(chat)


def cmd_specialists(args, settings: Settings) -> int:
    """Specialists created without code: create, list, delete, and train (the studio's job, here or as its child)."""
    from .studio import Upload

    if args.action == "train":
        from .training.job import nice, run

        domains = _domains(settings)
        if args.name not in domains:
            raise unknown_domain(args.name, domains)
        if settings.created_dir(args.name) is None:
            raise InvalidInput(f"{args.name} is a shipped specialist: train it with `train sft --domain {args.name}`")
        nice(args.nice)
        job = Path(args.job) if args.job else None
        try:
            result = run(domains[args.name], settings, job, steps=args.steps, eval_limit=args.eval_limit)
        except Exception as exc:
            from .studio import update_job, user_error

            if job is not None:
                update_job(job, status="failed", note=f"failed: {user_error(exc)}")
            raise
        print(json.dumps(result["metrics"], indent=2))
        return 0
    studio = _offline_studio(settings)
    if args.action == "list":
        rows = studio.listing()
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        for r in [] if args.json else rows:
            print(f"{r['name']:<16} {'created' if r['created'] else 'shipped':<8} {r['documents']:>3} docs "
                  f"{r['passages'] or 0:>5} passages  adapter: {r['adapter'] or 'base model'}  {r['title']}")
        return 0
    if args.action == "delete":
        print(studio.delete(args.name))
        return 0
    docs = []
    for path in map(Path, args.docs):
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file")
        docs.append(Upload(path.name, path.read_bytes()))
    examples = Path(args.examples)
    if not examples.is_file():
        raise InvalidInput(f"{examples}: no such file (one example question per line)")
    result = studio.create(args.name, args.title, args.description, docs, examples.read_text(encoding="utf-8"),
                           emoji=args.emoji, system_prompt=args.system_prompt or "", disclaimer=args.disclaimer or "",
                           progress=lambda fraction, text: print(f"{fraction:4.0%} {text}", flush=True))
    print(f"{result['name']} created: {result['passages']} passages; answering with the base model (no adapter). "
          "A running server picks it up when it restarts; the Studio tab and the API make it live at once.")
    for name, why in result["failed"].items():
        print(f"  skipped {name}: {why}")
    return 0


def cmd_serve(args, settings: Settings) -> int:
    from .api import serve

    serve(settings)
    return 0


def cmd_prepare(args, settings: Settings) -> int:
    """Convert the embedded model once and bring the knowledge bases up to date, with progress."""
    from .embeddings import Embedder
    from .generation.engine import resolve_base_model
    from .retrieval import KnowledgeBase

    settings.home.mkdir(parents=True, exist_ok=True)
    source, base_id = resolve_base_model(settings)
    print(f"base model: {base_id} ({source})")
    kb = KnowledgeBase(settings, _domains(settings), Embedder.for_settings(settings))
    print(f"embeddings: {kb.embedder.id}")
    for domain in kb.domains:
        if settings.knowledge_for(domain).is_dir():
            print(kb.ingest(domain).summary())
    wide = [d for d, spec in kb.domains.items() if spec.retrieval.rerank_wide]  # validated: it needs rerank
    asked = [d for d, spec in kb.domains.items() if spec.retrieval.rerank_asked]
    if wide or asked:  # embedded once here (kept under the home's cache), not on a user's first question
        from .retrieval import Retriever

        retriever = Retriever(kb)
        for domain in wide:
            start = time.perf_counter()
            index = retriever.sentence_index(domain)
            print(f"{domain}: {len(index.owner)} sentences ready for the rerank's wide search "
                  f"({time.perf_counter() - start:.1f}s)")
        for domain in asked:
            start = time.perf_counter()
            print(f"{domain}: {len(retriever.asked_index(domain).ids)} authored questions ready for the rerank "
                  f"({time.perf_counter() - start:.1f}s)")
    return 0


def cmd_settings(args, settings: Settings) -> int:
    print(settings_table())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m assistants", description="Specialist assistants on one small model.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_question_commands, _knowledge_commands, _measure_commands, _training_commands, _specialist_commands,
                _app_commands):
        add(sub)
    return p


def _question_commands(sub) -> None:
    """Ask, route and search: asking the specialists and their knowledge."""
    ask = sub.add_parser("ask", help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--domain", default="auto", help="auto (router decides) or a domain name")
    ask.add_argument("--region", default=None, help="where you are: UK, US, EU or a code such as GB-SCT, US-CA "
                     "(retrieval prefers its documents; escalations give its emergency numbers)")
    ask.add_argument("--json", action="store_true", help="print one JSON object with the answer and its trace")
    ask.add_argument("--max-tokens", type=int, default=None, help="cap on generated tokens")
    ask.add_argument("--no-retrieval", action="store_true", help="answer without the knowledge base")
    ask.add_argument("--show-prompt", action="store_true", help="with --json, include the exact prompt")
    ask.set_defaults(func=cmd_ask)

    route = sub.add_parser("route", help="route a question (or stdin lines, one JSON per line)")
    route.add_argument("question", nargs="?")
    route.add_argument("--json", action="store_true")
    route.set_defaults(func=cmd_route)

    search = sub.add_parser("search", help="search a domain's knowledge base")
    search.add_argument("query")
    search.add_argument("--domain", required=True)
    search.add_argument("--k", type=int, default=None)
    search.add_argument("--all", action="store_true", help="ignore the score threshold")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)


def _knowledge_commands(sub) -> None:
    """Ingest and knowledge check."""
    ingest = sub.add_parser("ingest", help="(re)ingest knowledge documents; unchanged files are skipped")
    ingest.add_argument("paths", nargs="*", help="files or folders (default: knowledge/<domain>/)")
    ingest.add_argument("--domain", default=None)
    ingest.set_defaults(func=cmd_ingest)

    kn = sub.add_parser("knowledge", help="knowledge documents: check sources, review dates and contradictions")
    kn.add_argument("what", choices=["check"])
    kn.add_argument("--domain", default=None)
    kn.add_argument("--json", action="store_true")
    kn.set_defaults(func=cmd_knowledge)


def _measure_commands(sub) -> None:
    """Eval and bench."""
    ev = sub.add_parser("eval", help="evaluations")
    ev.add_argument("what", nargs="?", default="all", choices=["all", "routing", "safety", "specialization"],
                    help="all (default): the full suite; routing; safety (red flags on held-out messages); specialization")
    ev.add_argument("--domains", nargs="+", default=None)
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--limit", type=int, default=None, help="held-out questions per domain (default: all of them)")
    ev.add_argument("--citations", type=int, default=20, help="answers generated per domain to measure the citation rate (0 = skip)")
    ev.add_argument("--out", default=None, help="report folder (default reports/<date>)")
    ev.add_argument("--questions", default=None, metavar="DIR",
                    help="folder of <domain>.jsonl question files (default data/eval; data/eval/fresh: the set "
                         "written after the answer rules were tuned, never used to tune them)")
    ev.add_argument("--configs", nargs="+", default=None, metavar="CONFIG",
                    help="model configurations to run: base, base+retrieval, adapter, adapter+retrieval, their "
                         "-noquote forms (the model writes the whole answer), candidate+retrieval[-noquote] (default: all, "
                         "the candidate's when a version sits beside the live adapter)")
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks: serve (batching vs naive PEFT), retrieval, load (mixed traffic), "
                           "studio (chat TTFT while a studio job trains)")
    bench.add_argument("what", choices=["serve", "retrieval", "load", "studio"])
    bench.add_argument("--url", default="http://127.0.0.1:7860", help="studio: the running server")
    bench.add_argument("--specialist", default=None, help="studio: a created specialist to train")
    bench.add_argument("--steps", type=int, default=20, help="studio: steps of the training job")
    bench.add_argument("--clients", type=int, default=50, help="load: concurrent clients")
    bench.add_argument("--seconds", type=float, default=120, help="load: duration")
    bench.add_argument("--warmup", type=float, default=20, help="load: seconds of uncounted traffic before measuring")
    bench.add_argument("--replicas", type=int, default=1, help="load: >1 runs nginx + Postgres + a Chroma server in front "
                       "of 1, then N, replicas and compares them")
    bench.add_argument("--rate-limit", type=int, default=0,
                       help="load: the server's per-client limit per minute (0 = off; all clients share 127.0.0.1)")
    bench.add_argument("--users", type=int, default=8)
    bench.add_argument("--requests", type=int, default=32)
    bench.add_argument("--max-new-tokens", type=int, default=64)
    bench.add_argument("--chunks", type=int, default=10_000, help="store size for the retrieval benchmark")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def _training_commands(sub) -> None:
    """Train, feedback and adapters: from data and ratings to live adapter versions."""
    train = sub.add_parser("train", help="build SFT data, fine-tune a domain adapter, train the sentence ranker or its quote gate")
    train.add_argument("what", choices=["data", "sft", "prefs", "ranker", "gate"])
    train.add_argument("--domain", default=None)
    train.add_argument("--epochs", type=float, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--rank", type=int, default=None)
    train.add_argument("--alpha", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--max-steps", type=int, default=None, help="-1 = full epochs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--holdout", type=float, default=0.0,
                       help="ranker: share of documents kept out and measured on (then saved under <home>/ranker-holdout)")
    train.add_argument("--mine-with", default=None, metavar="FOLDER",
                       help="ranker: a trained sentence ranker whose mistakes among the rerank candidates become "
                            "extra hard negatives (a second round)")
    train.add_argument("--negatives", type=int, default=None,
                       help="ranker, with --mine-with: the miner's mistakes kept per question (default 3)")
    train.add_argument("--ranker", default=None, metavar="FOLDER",
                       help="gate: the ranker trained with --holdout whose unseen questions fit it (default <home>/ranker-holdout)")
    train.add_argument("--include-unreviewed", action="store_true",
                       help="prefs: also train on corrections nobody approved yet (default: approved ones only)")
    train.set_defaults(func=cmd_train)

    fb = sub.add_parser("feedback", help="ratings: stats, or export for preference training")
    fb_sub = fb.add_subparsers(dest="action", required=True)
    fb_stats = fb_sub.add_parser("stats", help="counts per domain, rating and adapter version")
    fb_stats.add_argument("--json", action="store_true")
    fb_stats.set_defaults(func=cmd_feedback)
    fb_seed = fb_sub.add_parser("seed", help="load a rated set (--file, e.g. data/feedback/seed/legal.jsonl), or "
                                "simulated ratings from the held-out set (--domain, labelled simulated)")
    fb_seed.add_argument("--file", default=None, help="a seed file written by `feedback export --format seed`")
    fb_seed.add_argument("--domain", default=None)
    fb_seed.add_argument("--n", type=int, default=24)
    fb_seed.set_defaults(func=cmd_feedback)
    fb_round = fb_sub.add_parser("round", help="one feedback round: export -> train prefs -> eval gate -> blind "
                                 "comparison -> decision and report (resumable)")
    fb_round.add_argument("--domain", required=True)
    fb_round.add_argument("--steps", type=int, default=None, help="preference-training steps (default: train prefs's)")
    fb_round.add_argument("--batch-size", type=int, default=None)
    fb_round.add_argument("--lr", type=float, default=None)
    fb_round.add_argument("--win-share", type=float, default=0.55, help="share of decided blind pairs the candidate must win")
    fb_round.add_argument("--min-ratings", type=int, default=20)
    fb_round.add_argument("--folder", default=None, help="where the round keeps its state (default <home>/rounds/<domain>)")
    fb_round.add_argument("--report", default=None, help="report folder (default reports/<date>)")
    fb_round.add_argument("--restart", action="store_true", help="start the round over (its candidate, if any, stays)")
    fb_round.set_defaults(func=cmd_feedback)
    fb_review = fb_sub.add_parser("review", help="list corrections waiting for review, or approve/reject them by rating id")
    fb_review.add_argument("--domain", required=True)
    fb_review.add_argument("--approve", type=int, nargs="*", default=[], metavar="ID")
    fb_review.add_argument("--reject", type=int, nargs="*", default=[], metavar="ID")
    fb_review.set_defaults(func=cmd_feedback)
    fb_export = fb_sub.add_parser("export", help="KTO rows from thumbs, or DPO pairs from corrections")
    fb_export.add_argument("--domain", required=True)
    fb_export.add_argument("--format", choices=["kto", "dpo", "seed"], default="kto",
                           help="seed: every rating with its answer and prompt, loadable with `feedback seed --file`")
    fb_export.add_argument("out", help="output .jsonl")
    fb_export.set_defaults(func=cmd_feedback)

    ad = sub.add_parser("adapters", help="adapter versions: list, promote, rollback")
    ad_sub = ad.add_subparsers(dest="action", required=True)
    ad_list = ad_sub.add_parser("list")
    ad_list.add_argument("--json", action="store_true")
    ad_list.set_defaults(func=cmd_adapters)
    ad_promote = ad_sub.add_parser("promote", help="make a version live (refused if it regresses, unless --force)")
    ad_promote.add_argument("domain")
    ad_promote.add_argument("version")
    ad_promote.add_argument("--force", action="store_true")
    ad_promote.set_defaults(func=cmd_adapters)
    ad_rollback = ad_sub.add_parser("rollback", help="return to the previous live version")
    ad_rollback.add_argument("domain")
    ad_rollback.set_defaults(func=cmd_adapters)
    ad_vllm = ad_sub.add_parser("vllm", help="check the live adapters against vLLM's LoRA rules and print the "
                                "`vllm serve` command that serves them (ASSISTANTS_BACKEND=openai)")
    ad_vllm.add_argument("--model", default=None, help="the base model folder as the vLLM server sees it "
                         "(default: this machine's converted cache)")
    ad_vllm.add_argument("--adapters-at", default=None, help="where the vLLM server sees the adapters folder "
                         "(default: the same path as here)")
    ad_vllm.set_defaults(func=cmd_adapters)


def _specialist_commands(sub) -> None:
    """Specialists made without code (the studio's operations from the command line)."""
    sp = sub.add_parser("specialists", help="create, list, delete or train specialists (no code: documents + questions)")
    sp_sub = sp.add_subparsers(dest="action", required=True)
    create = sp_sub.add_parser("create", help="a new specialist from documents and example questions")
    create.add_argument("name", help="2-32 lower-case letters, digits or _ (the API model name)")
    create.add_argument("--title", required=True)
    create.add_argument("--description", required=True, help="one line: what it covers (also shown to users)")
    create.add_argument("--docs", nargs="+", required=True, metavar="FILE", help="md, txt, pdf, html or docx files")
    create.add_argument("--examples", required=True, metavar="FILE", help="example questions, one per line (at least 8)")
    create.add_argument("--emoji", default="")
    create.add_argument("--system-prompt", default=None, help="default: a template from the title and description")
    create.add_argument("--disclaimer", default=None)
    create.set_defaults(func=cmd_specialists)
    listing = sp_sub.add_parser("list", help="every specialist, shipped and created")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_specialists)
    delete = sp_sub.add_parser("delete", help="delete a created specialist (its documents, passages and adapters)")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_specialists)
    train = sp_sub.add_parser("train", help="train a created specialist's adapter as a candidate version, then its gate")
    train.add_argument("name")
    train.add_argument("--steps", type=int, default=30, help="optimizer steps of 8 examples")
    train.add_argument("--eval-limit", type=int, default=20, help="held-out questions the gate answers")
    train.add_argument("--job", default=None, help=argparse.SUPPRESS)  # the studio's job file
    train.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)
    train.set_defaults(func=cmd_specialists)


def _app_commands(sub) -> None:
    """Serve, prepare and settings: running the app."""
    serve = sub.add_parser("serve", help="start the web app and API")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    prep = sub.add_parser("prepare", help="convert the model cache and ingest the knowledge (make run does this)")
    prep.set_defaults(func=cmd_prepare)

    st = sub.add_parser("settings", help="print the settings table (environment variables)")
    st.set_defaults(func=cmd_settings)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes are not for users
    args = parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars on every start are noise; ours stay
    try:
        settings = Settings.from_env(host=getattr(args, "host", None), port=getattr(args, "port", None))
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        # Nothing is fetched from a model hub unless the operator allowed it.
        os.environ.setdefault("HF_HUB_OFFLINE", "0" if settings.allow_downloads else "1")
        return args.func(args, settings)
    except AssistantsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
