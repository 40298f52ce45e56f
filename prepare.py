"""prepare.py: collect s1's question pool, then distill a reasoning trace for every question.
Start reading at main(), then collect() and distill(); sources.py holds the table of s1's 16
sources.

    python prepare.py collect --out runs/s1/pool.jsonl               # s1's 16 sources from the hub
    python prepare.py collect --sources math gsm8k --local gsm8k=gsm8k.jsonl --out pool.jsonl
    python prepare.py collect --sources mini --n 2000 --out runs/demo/pool.jsonl   # built-in task
    # distill through DeepSeek-R1's API (s1K-1.1), any OpenAI-compatible server, a local model
    # through sample.py (one process, or under torchrun replicas of --tp GPUs), the built-in one:
    python prepare.py distill --pool runs/s1/pool.jsonl --out runs/s1/distilled.jsonl
    python prepare.py distill --pool pool.jsonl --base-url http://127.0.0.1:8000/v1 --model s1 \\
        --out d.jsonl
    python prepare.py distill --pool pool.jsonl --teacher local --model DIR --out d.jsonl
    torchrun --nproc-per-node 8 prepare.py distill --pool pool.jsonl --teacher local --model DIR \\
        --out d.jsonl
    python prepare.py distill --pool runs/demo/pool.jsonl --teacher mini \\
        --out runs/demo/distilled.jsonl
    # s1.1: s1K's 1,000 re-traced
    python prepare.py distill --questions simplescaling/s1K --out runs/s1.1/s1K-1.1.jsonl

collect (s1 data/collect_data.py, add_aime.py): every source is mapped to s1's five columns
(question, solution, cot_type, source_type, metadata). Sources are read in order; a question
sharing a word 8-gram with a decontamination set (by default s1's: AIME 2022-2024, GPQA Diamond,
MATH500, LiveCodeBench release_v4) or with a question kept from an earlier source is dropped, and
only then are XWord (1,000) and SciEval (250) sub-sampled; then exact duplicates go. AIME
1983-2022 is appended last, unchecked, as s1's add_aime.py did. Any source can be a local file
(--local NAME=PATH).

distill (docs/s1.md §2): two recipes. --pool traces a whole pool for curate.py to select from on
this teacher's lengths and grades (s1 did this with Gemini); --questions re-traces a set already
selected, as it is (s1.1: s1K's 1,000 questions, chosen with Gemini's features, traced again by
DeepSeek-R1). The teacher sees the raw question, as s1's did. Every reply is appended to a JSONL
cache keyed by sha256(question)[:16] the moment it arrives, so a crash or Ctrl-C loses nothing and
a rerun continues. Empty or malformed replies are kept and marked (distill_status), never dropped.
A local teacher answers every question left in one sample.py generate call (continuous batching);
under torchrun the processes form replicas of --tp ranks, each rank holding a tensor-parallel slice
of its replica's teacher, each replica answering its share of the questions; rank 0 alone reads
the cache and writes the files.
"""
import argparse
import json
import os
import re

from machinery import api, benchmarks, cli, jsonl, mini, parallel, sources

# ----------------------------------------------------------------------------------------------
# The recipe (docs/s1.md §1-2)

NGRAM = 8  # s1's decontamination: shared word 8-grams (data/collect_data.py)
# s1's decontamination sets (data/collect_data.py l. 445-450): GPQA Diamond and MATH500 as eval.py
# loads them, and two that exist on the hub only: name -> (hub dataset, question field, files).
# LiveCodeBench's loading script, which s1 ran with version_tag="release_v4", reads these four
# files (release_v4 is cumulative: v1-v3, which s1 trains on, and what v4 adds); recent `datasets`
# no longer run scripts, so the files are fetched as they are.
HUB_EVAL_SETS = {
    # AIME 2022-2024, split train
    "aimo-validation-aime": ("AI-MO/aimo-validation-aime", "problem", None),
    "livecodebench-v4": ("livecodebench/code_generation_lite", "question_content",
                         ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl"]),
}
S1_EVAL_SETS = ["aimo-validation-aime", "gpqa", "math500", "livecodebench-v4"]
# s1.1's teacher (s1K-1.1): DeepSeek-R1 through DeepSeek's API
TEACHER_URL = "https://api.deepseek.com"
TEACHER_MODEL = "deepseek-reasoner"
TEACHER_KEY_ENV = "DEEPSEEK_API_KEY"
LOCAL_CONTEXT = 32768  # a local teacher's context in tokens: s1's (docs/s1.md §3.1, §6.1)


# ----------------------------------------------------------------------------------------------
# The story

def main(argv=None):
    args = parse_args(argv)
    # under torchrun every rank would write the same files
    if parallel.WORLD > 1 and getattr(args, "teacher", None) != "local":
        raise SystemExit("torchrun: only `prepare.py distill --teacher local` "
                         "runs on several processes")
    collect(args) if args.command == "collect" else distill(args)


def collect(args):
    tests = eval_questions(args.eval_sets, args.eval_data)
    test_grams = set().union(*(ngrams(q, args.ngram) for qs in tests.values() for q in qs))
    print("decontaminating against " + ", ".join(f"{k} ({len(v)})" for k, v in tests.items()))
    earlier, pool, appended = set(), [], []
    print(f"{'source':<16}{'loaded':>8}{'eval overlap':>14}{'earlier overlap':>17}{'kept':>8}")
    for name in args.sources:
        records, pick = load_source(name, args.local.get(name), args)
        if name == "aime" and not args.check_aime:
            # s1 data/add_aime.py l. 26-34: concatenated to the finished pool
            appended += records
            print(f"{name:<16}{len(records):>8}{'-':>14}{'-':>17}{len(records):>8}"
                  "  appended last, unchecked (s1's add_aime.py)")
            continue
        kept, contaminated, overlap = [], 0, 0
        for r in records:
            grams = ngrams(r["question"], args.ngram)
            if not grams.isdisjoint(test_grams):
                contaminated += 1
            elif not grams.isdisjoint(earlier):
                overlap += 1
            else:
                kept.append(r)
        clean = len(kept)
        # picked after decontamination, as s1 (collect_data.py l. 459-474)
        kept = pick(kept) if pick else kept
        # after each source, its questions join the set the next ones are checked against
        for r in kept:
            earlier |= ngrams(r["question"], args.ngram)
        print(f"{name:<16}{len(records):>8}{contaminated:>14}{overlap:>17}{len(kept):>8}"
              + (f"  {len(kept)} picked of {clean}" if len(kept) != clean else ""))
        pool += kept
    seen, unique = set(), []
    for r in pool:
        if r["question"] not in seen:
            seen.add(r["question"])
            unique.append(r)
    print(f"exact duplicates removed: {len(pool) - len(unique)}")
    unique += appended
    print(f"pool: {len(unique)} questions -> {args.out}")
    jsonl.write_jsonl(args.out, unique)


def distill(args):
    args.teacher_name = {"mini": f"mini (seed {args.seed})"}.get(args.teacher, args.model)
    if parallel.WORLD > 1:  # replicas of --tp ranks, each generating its share (parallel.py)
        parallel.init_distributed(args.device)
    if args.pool:
        records = jsonl.read_questions(args.pool, "the pool")
    else:
        records = fixed_questions(args.questions)
    if parallel.RANK == 0:
        parallel.recover_parts(args.cache)  # the replies of a stopped data-parallel run
    cached = {}  # question hash -> the newest record from this teacher
    for r in jsonl.resume(args.cache) if parallel.RANK == 0 else []:
        if r.get("teacher") == args.teacher_name:
            cached[r["question_hash"]] = r
    redo = ("error",) + (("empty", "malformed") if args.retry_failed else ())
    questions = list(dict.fromkeys(r["question"] for r in records))
    todo = [q for q in questions if jsonl.question_hash(q) not in cached
            or cached[jsonl.question_hash(q)]["status"] in redo]
    todo = parallel.broadcast(todo[:args.limit] if args.limit else todo)
    if parallel.RANK == 0:
        print(f"distill: {len(questions)} questions, {len(questions) - len(todo)} already in "
              f"{args.cache}, {len(todo)} to ask {args.teacher_name}")
    if todo:
        os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
        teacher = load_teacher(args) if args.teacher == "local" else None  # parallel.layout
        mine, saved = parallel.deal(todo), []  # this replica's share
        with parallel.open_output(args.cache) as f:
            def save(record):  # one line per reply, flushed: a crash loses at most that line
                cached[record["question_hash"]] = record
                jsonl.write_line(f, record)
                saved.append(record["question_hash"])
            try:
                teach(args, mine, save if parallel.writes() else None, teacher)
            except KeyboardInterrupt:
                raise SystemExit(f"interrupted: {len(saved)} replies saved in {f.name} "
                                 "this run; run the same command again to continue") from None
        position = {jsonl.question_hash(q): n for n, q in enumerate(todo)}
        for r in parallel.merge_parts(args.cache, lambda r: position[r["question_hash"]]):
            cached[r["question_hash"]] = r
    parallel.workers_leave()  # under torchrun the other ranks leave here: the rest is rank 0's
    out, counts = [], {}
    pending = {"status": "pending", "problem": None, "thinking": None, "attempt": None}
    for r in records:
        rec = cached.get(jsonl.question_hash(r["question"]), pending)
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        # e.g. s1K's Gemini attempt, kept aside
        earlier = {f"input_{k}": r[k] for k in ("thinking", "attempt") if r.get(k) is not None}
        out.append(dict(r, **earlier, thinking=rec["thinking"], attempt=rec["attempt"],
                        distill_status=rec["status"], distill_problem=rec["problem"],
                        teacher=args.teacher_name))
    jsonl.write_jsonl(args.out, out)
    print("distill: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f" -> {args.out}")
    if counts.get("pending") or counts.get("error"):
        print("distill: rerun the same command to ask again for the pending and failed ones")


# ----------------------------------------------------------------------------------------------
# collect's sources

def load_source(name, local, args):
    """(records of one source in s1's columns, its pick or None): from the hub, the built-in task,
    or a local file. The pick is collect's to apply: s1 sub-sampled after decontamination."""
    if name == "mini" and not local:
        return mini.rows(args.n, args.seed, *args.steps), None
    source = next((s for s in sources.SOURCES if s["name"] == name), None)
    if local:
        part = (source or {"parts": [sources.part()]})["parts"][0]
        raw = [(r, part) for r in jsonl.read_input(local)]
    elif source is None:
        raise SystemExit(f"--sources {name}: not one of {sources.S1_SOURCES + ['mini']}; "
                         f"give its file with --local {name}=PATH")
    else:
        raw = [(r, p) for p in source["parts"] for r in sources.hub_records(source["hub"], **p)]
    if args.limit:
        raw = raw[:args.limit]
    records, mapped = [], 0
    for i, (r, p) in enumerate(raw):
        if source is None or ("cot_type" in r and "source_type" in r):
            records.append(sources.generic_record(r, name, local, i))
            continue
        mapped += 1
        try:
            if source.get("keep", lambda r, p: True)(r, p):
                records.append(source["to_record"](r, p))
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise SystemExit(f"{local or source['hub']} record {i}: not in {name}'s layout "
                             f"({type(e).__name__}: {e})")
    return records, source.get("pick") if mapped else None


# ----------------------------------------------------------------------------------------------
# Decontamination and de-duplication (docs/s1.md §1.2)

def ngrams(text, n=NGRAM):
    """s1's word n-grams of the lower-cased, whitespace-collapsed text; a shorter text is one
    gram."""
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def hub_eval_questions(name, path=None):
    """The questions of one of HUB_EVAL_SETS: from path, else from the hub, or its cache when
    offline."""
    hub, key, files = HUB_EVAL_SETS[name]
    hint = f"give a copy with --eval-data {name}=PATH"
    if files and not path:
        from huggingface_hub import hf_hub_download
        try:  # offline (HF_HUB_OFFLINE=1) this returns the cached copy, or fails
            paths = [hf_hub_download(hub, f, repo_type="dataset") for f in files]
        except Exception as e:
            raise SystemExit(f"{hub} ({', '.join(files)}): cannot load ({sources.one_line(e)}); "
                             f"offline and not cached? {hint}")
        # large files (test cases): read a line at a time, keeping only the questions
        return [r[key] for p in paths for _, r in jsonl.numbered(p)]
    records = jsonl.read_records(path) if path else sources.hub_records(hub, hint=hint)
    questions = [next((r[k] for k in (key, "question", "problem") if isinstance(r.get(k), str)),
                      None) for r in records]
    if None in questions:
        raise SystemExit(f"{path or hub} record {questions.index(None)}: no {key!r} "
                         f"(--eval-sets {name})")
    return questions


def eval_questions(names, sources):
    """{benchmark: [question text]}: s1's hub-only sets, or eval.py's benchmarks as eval.py loads
    them; GPQA is skipped, and said so, without a copy."""
    out = {}
    for name in names:
        if name in HUB_EVAL_SETS:
            out[name] = hub_eval_questions(name, sources.get(name))
            continue
        gpqa_copy = benchmarks.BENCHMARKS["gpqa"][3]
        if name == "gpqa" and name not in sources and not os.path.exists(gpqa_copy):
            print(f"decontamination: skipped GPQA Diamond (no copy at {gpqa_copy}; "
                  "give one with --eval-data gpqa=PATH)")
            continue
        questions = benchmarks.load_benchmark(name, sources.get(name))
        # GPQA's prompt has its options appended; s1 matched the question alone
        out[name] = [q["prompt"].rsplit("\n\nA) ", 1)[0] if q["choices"] else q["prompt"]
                     for q in questions]
    return out


# ----------------------------------------------------------------------------------------------
# distill's teachers

def split_reply(message):
    """(thinking, answer, problem): the thinking from reasoning_content (DeepSeek's API, serve.py's
    server) or reasoning, else from <think>...</think> in the content; problem names what is
    wrong."""
    content = message.get("content") or ""
    thinking = message.get("reasoning_content") or message.get("reasoning")
    # some servers put the opening <think> in the prompt
    if thinking is None and "</think>" in content:
        thinking, _, content = content.partition("</think>")
        thinking = thinking.split("<think>", 1)[-1]
    elif thinking is None and "<think>" in content:
        return None, content, "malformed: <think> is never closed"
    if not (thinking or "").strip():
        return thinking, content, "empty: no thinking"
    if not content.strip():
        return thinking, content, "empty: no answer"
    return thinking.strip(), content.strip(), None


def load_teacher(args):
    """A local teacher's (model, tokenizer): under torchrun, this rank's part of its replica."""
    import sample
    return sample.load_for_generation(args.model, args.device, args.dtype, args.max_tokens,
                                      args.batch_size, tp=args.tp)[:2]


def teach(args, todo, save, teacher=None):
    """Ask the teacher about every question in todo; save(record) as each reply arrives. save is
    None on a rank that does not write (parallel.py): it only takes its part in generating.
    teacher: load_teacher's, for --teacher local."""
    def rec(q, thinking, answer, problem):
        status = problem.split(":")[0] if problem else "ok"
        return {"question_hash": jsonl.question_hash(q), "teacher": args.teacher_name,
                "status": status, "problem": problem, "question": q, "thinking": thinking,
                "attempt": answer}

    if args.teacher == "mini":
        for q in todo:
            try:
                save(rec(q, *mini.teacher(q, args.seed), None))
            except ValueError as e:
                save(rec(q, None, None, f"malformed: {e}"))
    elif args.teacher == "local":  # one generate call: the engine schedules every question itself
        import sample
        model, tokenizer = teacher
        finished = []

        def done(i, out):
            thinking, answer, problem = split_reply({"reasoning_content": out["thinking"],
                                                     "content": out["answer"]})
            if not out["finished"] and not problem:
                problem = "malformed: the context ran out before the answer ended"
            save(rec(todo[i], thinking, answer, problem))
            finished.append(i)
            if len(finished) % 100 == 0 or len(finished) == len(todo):
                print(f"distill: {len(finished)} of {len(todo)}", flush=True)
        # a row's draws depend only on the seed and its question: batching and resuming change
        # nothing
        sample.generate(model, tokenizer, todo, max_thinking_tokens=args.max_thinking_tokens,
                        max_tokens=args.max_tokens, temperature=args.temperature or 0.0,
                        seed=args.seed, batch_size=args.batch_size, progress=False,
                        on_result=done if save else None)
    else:
        extra = {k: v for k, v in (("temperature", args.temperature),
                                   ("max_tokens", args.max_tokens)) if v is not None}

        def ask(q):
            try:
                message = api.chat_completion(args.base_url, args.model,
                                              [{"role": "user", "content": q}], args.api_key_env,
                                              args.timeout, **extra)
            except (RuntimeError, KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                return rec(q, None, None, f"error: {type(e).__name__}: {e}")
            return rec(q, *split_reply(message))

        api.ask_all(todo, ask, save, args.workers, "distill")


def fixed_questions(source):
    """distill --questions: the records of a selected set (s1K on the hub, or a local copy),
    re-traced as they are, in their order, as s1.1 re-traced s1K's 1,000 questions with
    DeepSeek-R1 (s1 README l. 15): nothing is selected again on the new teacher's lengths or
    grades."""
    records = jsonl.local_or_hub(source, flag="--questions")
    if not records:
        raise SystemExit(f"--questions {source}: no records")
    for i, r in enumerate(records):
        if not isinstance(r.get("question"), str) or not r["question"].strip():
            raise SystemExit(f"--questions {source} record {i}: "
                             "needs a non-empty string 'question'")
    if parallel.RANK == 0:
        print(f"distill: the {len(records)} questions of {source}, re-traced as they are "
              "(s1.1's recipe); train on the output as it is, with no curate.py select")
    return records


# ----------------------------------------------------------------------------------------------
# Command line

COLLECT_VS_S1 = """Collect s1's question pool (data/collect_data.py, then data/add_aime.py).

As s1: decontamination against AIME 2022-2024 (AI-MO/aimo-validation-aime), GPQA Diamond, MATH500
and LiveCodeBench release_v4 with word 8-grams, each source also against the sources before it;
XWord's 1,000 and SciEval's 250 are picked from what decontamination left; AIME 1983-2022 is
appended to the finished pool with neither decontamination nor de-duplication, so its 2022
problems, which are in aimo-validation-aime, stay. release_v4 contains LiveCodeBench v1-v3, so
this removes every LiveCodeBench question of the pool, as s1's code, run as written, does. s1's
keep list (TMP_QUESTIONS_TO_KEEP, l. 18-102, in data/s1/tmp_questions_to_keep.json) passes
NuminaMath's filter and is added to SciEval's 250 and XWord's 1,000. GPQA's options are shuffled
into the question (fix_gpqa.py) over the collected pool's GPQA records, as s1's README has it run
after collecting.

Where we differ from s1, and why:
  - questions under 8 words have no 8-gram; we compare them whole (s1 let them through unchecked);
  - GPQA Diamond is read from eval.py's local copy when there is one (the hub's is gated), and
    skipped, with a message, when there is none;
  - --aime25 adds AIME25, which came out after s1; --check-aime treats AIME like the other sources;
  - SciEval's 250 are spread over tasks and SocraticQA topics by a seeded walk; s1's
    select_examples_scieval walks a differently shuffled copy (and can take a record twice), so
    the 250 records differ from s1's;
  - sources keep their file order; s1 shuffled each source without a pick function
    (ds.shuffle(seed=42), collect_data.py l. 469). Besides the pool's order and which copy of a
    duplicate survives, this decides GPQA's options: fix_gpqa.py draws one random.seed(42)
    sequence record by record (l. 7, 24), so each GPQA record's option permutation depends on
    its place, and ours differ from s1's.
"""


def name_eq_path(specs, flag, p):
    out = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not (name and eq and path):
            p.error(f"{flag} {spec!r}: expected NAME=PATH")
        out[name] = path
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="the question pool: load, map, decontaminate, de-duplicate",
                       description=COLLECT_VS_S1,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--sources", nargs="+", default=sources.S1_SOURCES,
                   help="in this order (later ones are checked against earlier ones): "
                        f"{' '.join(sources.S1_SOURCES)}, mini (the built-in miniature task), "
                        "or a name of one's own given with --local")
    c.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                   help="read source NAME from a local .jsonl/.json(.gz): records in the hub's "
                        "layout, in s1's five columns, or (a source of one's own) with a question "
                        "and a solution or answer")
    c.add_argument("--eval-sets", nargs="+", default=S1_EVAL_SETS,
                   help=f"benchmarks to decontaminate against (default: s1's); "
                        f"{', '.join(HUB_EVAL_SETS)} from the hub "
                        f"({', '.join(h for h, _, _ in HUB_EVAL_SETS.values())}; offline: its "
                        f"cache), or any of {', '.join(benchmarks.BENCHMARKS)} as eval.py loads "
                        "them. Offline with no cache: --eval-sets aime24 aime25 math500 gpqa "
                        "(local copies), or --eval-data")
    c.add_argument("--aime25", action="store_true",
                   help="decontaminate against AIME25 too (s1 predates it)")
    c.add_argument("--check-aime", action="store_true",
                   help="decontaminate and de-duplicate the aime source like the others "
                        "(s1 did not: add_aime.py)")
    c.add_argument("--eval-data", action="append", default=[], metavar="NAME=PATH",
                   help="another benchmark's file")
    c.add_argument("--ngram", type=cli.at_least(1), default=NGRAM,
                   help=f"word n-gram size of the decontamination (s1: {NGRAM})")
    c.add_argument("--limit", type=cli.at_least(0), default=0,
                   help="first N records of each source only (a trial run)")
    c.add_argument("--n", type=cli.at_least(1), default=2000, help="mini: number of questions")
    c.add_argument("--seed", type=cli.at_least(0), default=0, help="mini: generator seed")
    c.add_argument("--steps", type=cli.at_least(1), nargs=2, default=(1, 9), metavar=("MIN", "MAX"),
                   help="mini: fewest and most reasoning steps")
    c.add_argument("--out", required=True, help="the pool, JSONL")
    d = sub.add_parser("distill", help="a thinking trace and an answer for every question, "
                                       "cached and resumable")
    d.add_argument("--pool", help="JSONL with a 'question' per record (collect's output); "
                                  "curate.py then selects on this teacher's lengths and grades")
    d.add_argument("--questions", metavar="SOURCE",
                   help="instead of --pool: a selected set to re-trace as it is, a hub dataset or "
                        "a local file (simplescaling/s1K: s1.1's recipe, s1K's 1,000 with a new "
                        "teacher; train on the output)")
    d.add_argument("--out", required=True,
                   help="the pool's records with thinking, attempt and distill_status added")
    d.add_argument("--cache", help="append-only JSONL of replies keyed by question hash "
                                   "(default: OUT.cache.jsonl)")
    d.add_argument("--teacher", choices=["api", "local", "mini"], default="api",
                   help="api: an OpenAI-compatible endpoint; local: --model through sample.py; "
                        "mini: the built-in task's programmatic teacher")
    d.add_argument("--base-url", default=TEACHER_URL, help="api: endpoint (s1K-1.1: DeepSeek-R1)")
    d.add_argument("--model", default=TEACHER_MODEL,
                   help="api: model name; local: checkpoint directory or hub name")
    d.add_argument("--api-key-env", default=TEACHER_KEY_ENV,
                   help="api: environment variable holding the key")
    d.add_argument("--workers", type=cli.at_least(1), default=16, help="api: requests in flight")
    d.add_argument("--timeout", type=cli.above(0), default=1800, help="api: seconds per request")
    d.add_argument("--temperature", type=cli.at_least(0, float), default=None,
                   help="sampling temperature (default: the API's; local: 0)")
    d.add_argument("--max-tokens", type=cli.at_least(2), default=None,
                   help=f"api: max_tokens sent; local: context (default {LOCAL_CONTEXT})")
    d.add_argument("--max-thinking-tokens", type=cli.budget, default=None,
                   help="local: cap on thinking tokens (an integer or auto)")
    d.add_argument("--batch-size", type=cli.at_least(1), default=16,
                   help="local: most sequences decoded together")
    d.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    d.add_argument("--dtype", choices=["bfloat16", "float32"], default="float32",
                   help="local: weights' dtype")
    cli.add_tp_flag(d)
    d.add_argument("--seed", type=cli.at_least(0), default=0,
                   help="mini: the teacher's stops; local: sampling")
    d.add_argument("--limit", type=cli.at_least(0), default=0,
                   help="ask about the first N outstanding questions only")
    d.add_argument("--retry-failed", action="store_true",
                   help="ask again where the reply was empty or malformed")
    args = p.parse_args(argv)
    if args.command == "collect":
        args.local = name_eq_path(args.local, "--local", p)
        args.eval_data = name_eq_path(args.eval_data, "--eval-data", p)
        args.eval_sets = list(dict.fromkeys(args.eval_sets + ["aime25"] * args.aime25))
        known = [*HUB_EVAL_SETS, *benchmarks.BENCHMARKS, *args.eval_data]
        unknown = [b for b in args.eval_sets if b not in known]
        if unknown:
            p.error(f"--eval-sets {' '.join(unknown)}: not one of {sorted(set(known))}; "
                    "give a file with --eval-data")
        for name in args.local:
            if name not in args.sources:
                p.error(f"--local {name}: not among --sources; add it there "
                        "(the order of --sources matters)")
        if not 1 <= args.steps[0] <= args.steps[1]:
            p.error(f"--steps {args.steps[0]} {args.steps[1]}: need 1 <= MIN <= MAX")
    else:
        if (args.pool is None) == (args.questions is None):
            p.error("distill: give --pool (a pool to curate afterwards) or --questions (a selected "
                    "set, re-traced as it is), one of the two")
        args.cache = args.cache or re.sub(r"\.jsonl$", "", args.out) + ".cache.jsonl"
        if args.teacher == "local":
            args.max_tokens = args.max_tokens or LOCAL_CONTEXT
    return args


if __name__ == "__main__":
    cli.main(main)
    parallel.exit_now()
