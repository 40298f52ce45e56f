"""curate.py: s1's features and its selection of 1,000 questions (s1K) from the distilled pool.
Start reading at main(), then features() and select(): each calls its parts in the order s1 ran
them.

    python curate.py features --data runs/s1/distilled.jsonl --out runs/s1/featurized.jsonl  # s1's
    python curate.py features --data d.jsonl --solvers DIR --tokenizer DIR --classifier none \\
        --out f.jsonl
    # every GPU: replicas of --tp GPUs each (default: the smallest that fits)
    torchrun --nproc-per-node 8 curate.py features --data d.jsonl --solvers DIR ... --out f.jsonl
    python curate.py select --data runs/s1/featurized.jsonl --out runs/s1/s1K.jsonl --seed 0
    # an ablation:
    python curate.py select --data f.jsonl --selection longest --out runs/s1/longest1K.jsonl

features (s1 data/bulk_inference.py, featurization.py); each is cached per question hash in an
append-only JSONL beside --out, so a rerun computes only what is missing:
  difficulty  each --solvers model answers every question through sample.py as a plain chat (no
              thinking phase, temperature 0.05: s1's Qwen2.5-Instruct runs; one generate call
              per model, shared out to replicas under torchrun; `mini` is the demo's
              programmatic stand-in, mini.py), graded against the reference solution by
              eval.py's grader, or by an LLM with s1's grading prompt; the teacher's own attempt
              is graded the same way (s1's isgeminicorrect);
  length      thinking tokens in the target tokenizer;
  domain      kept where the record has one, else one of the 61 MSC classes of data/s1/msc.json,
              by an LLM through an OpenAI-compatible endpoint with s1's prompt (or --classifier
              none: the source).
select (s1 data/filter.ipynb), counts printed after every stage, and after 1a and 1b how many
records each rule removed: 1a drop records with a missing feature; 1b drop questions with figure
or formatting debris; 2 drop questions any solver got right; 3a keep the benchmark-like seeds the
teacher got right; 3b until --n: a domain uniformly (after --uniform-until picks, by the AIME/GPQA
domain prior), then a question of it with probability ∝ 2^-rank of its thinking length (rank 0 =
longest). Seeded (numpy), so the same seed gives the same 1,000.
Output: a JSONL train.py reads as it is (question, thinking, answer), a summary JSON and a PNG.
"""
import argparse
import json
import os
import re
import statistics
from collections import Counter

import numpy as np

from machinery import api, benchmarks, cli, jsonl, parallel

ROOT = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------------------------
# The recipe (docs/s1.md §3)

# difficulty: s1's solvers answer without thinking (data/bulk_inference.py; docs/s1.md §3.1)
SOLVERS = ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-32B-Instruct"]
SOLVER_TEMPERATURE = 0.05
SOLVER_CONTEXT = 32768  # tokens: prompt + answer
TOKENIZER = "Qwen/Qwen2.5-32B-Instruct"  # length: thinking tokens in the target model's tokenizer
# grading and domains: s1 asked Claude 3.5 Sonnet for both (docs/s1.md §3.2, §3.4)
LLM_MODEL = "claude-3-5-sonnet-20241022"
LLM_URL = "https://api.anthropic.com/v1"
LLM_KEY_ENV = "ANTHROPIC_API_KEY"
# select (data/filter.ipynb; docs/s1.md §3.5-3.6)
N_SELECTED = 1000  # s1K
# stage 3a keeps the hard GPQA and AIME questions the teacher got right, and those of MATH with
# more than LONG_MIN_LENGTH thinking tokens (the source_types prepare.py gives them)
GPQA, AIME, MATH = "Idavidrein/gpqa", "qq8933/AIME_1983_2024", "simplescaling/openaimath"
LONG_MIN_LENGTH = 5600
UNIFORM_UNTIL = 700  # stage 3b draws domains uniformly until this many, then by the AIME/GPQA prior
GRADING_PROMPT = (  # s1's data/grading.txt, verbatim
    "You are an AI assistant for grading a science problem.\n"
    "The user will provide you with the question itself, an attempt made by a student and the "
    "correct answer to the problem.\n"
    "Your job is to judge whether the attempt is correct by comparing it with the correct "
    "answer.\n"
    "If the expected solution concludes with a number or choice, there should be no ambiguity.\n"
    "If the expected solution involves going through the entire reasoning process, you should "
    "judge the attempt based on whether the reasoning process is correct with correct answer if "
    "helpful.\n"
    "\n"
    "The user will provide the attempt and the correct answer in the following format:\n"
    "\n"
    "# Problem\n"
    "{problem}\n"
    "\n"
    "## Attempt\n"
    "{attempt}\n"
    "\n"
    "## Correct answer\n"
    "{solution}\n"
    "\n"
    "Explain your reasoning, and end your response on a new line with only \"Yes\" or \"No\" "
    "(without quotes).\n")
CLASSIFY_PROMPT = (  # s1's featurization.py (docs/s1.md §3.4)
    "You are a helpful assistant that classifies questions into different subjects based on the "
    "provided classification rubrics. You will be given a question and a list of subjects. You "
    "need to classify the question into one of the subjects. If the question has multiple "
    "subjects, you should classify the question into the most relevant subject. Explain your "
    "reasoning, and end your response on a new line with two-digit code of the subject that the "
    "question belongs to.")


# ----------------------------------------------------------------------------------------------
# The story

def main(argv=None):
    args = parse_args(argv)
    if parallel.WORLD > 1 and args.command != "features":  # every rank would write the same files
        raise SystemExit("torchrun: only `curate.py features` runs on several processes")
    features(args) if args.command == "features" else select(args)


def features(args):
    records = jsonl.read_questions(args.data, "the distilled pool")
    for r in records:
        r["question_hash"] = jsonl.question_hash(r["question"])
    if parallel.RANK == 0:
        print(f"features: {len(records)} records, "
              f"{len({r['question'] for r in records})} distinct questions")
    # under torchrun the other ranks leave in difficulty(): the rest is rank 0's
    grades = difficulty(args, records)
    lengths = length(args, records)
    domains = domain(args, records)
    for r, n, d in zip(records, lengths, domains):
        h = r["question_hash"]
        r["solver_correct"] = {s: grades[(h, s)] for s in args.solvers}
        r["teacher_correct"] = grades[(h, "teacher")]
        r["length"] = n
        r["domain"] = d
    jsonl.write_jsonl(args.out, records)
    print(f"features -> {args.out}")


def select(args):
    records = jsonl.read_questions(args.data, "the featurized pool")
    for i, r in enumerate(records):
        if "solver_correct" not in r or "length" not in r:
            raise SystemExit(f"{args.data} record {i}: no features; run `curate.py features` first")
    rng = np.random.default_rng(args.seed)
    stages = [("0 start", len(records))]

    def stage(name, kept, note=""):
        stages.append((name, len(kept)))
        print(f"stage {name:<44}{len(kept):>8}  {note}")
        return kept

    def removed(reasons):  # how many records each rule removed
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            if reason:
                llm = "no short reference" in reason
                print(f"      - {reason:<42}{n:>8}"
                      + ("  (s1's Claude graded these: features --grader llm)" if llm else ""))

    print(f"stage {'0 start':<44}{len(records):>8}")
    if args.selection == "all":  # the paper's 59K-full: every question with a trace
        chosen = stage("all with a trace (59K-full)",
                       [r for r in records if r.get("distill_status") == "ok"])
    else:
        complete = stage("1a quality: no missing feature",
                         [r for r in records if not missing_feature(r)])
        removed(Counter(missing_feature(r) for r in records))
        quality = stage("1b quality: formatting", [r for r in complete if formatting_ok(r)])
        removed(Counter(formatting_problem(r) for r in complete))
        if args.selection == "random":
            picks = rng.choice(len(quality), size=min(args.n, len(quality)), replace=False)
            chosen = stage(f"random {args.n}", [quality[i] for i in picks])
        elif args.selection == "longest":
            longest = sorted(quality, key=lambda r: -r["length"])
            chosen = stage(f"longest {args.n}", longest[:args.n])
        elif args.selection == "diverse":
            chosen = stage(f"diverse {args.n}: uniform domain, uniform question",
                           sample_by_length(quality, args.n, rng, uniform_until=args.n,
                                            weighted=False))
        else:
            hard = stage("2 difficulty: every solver wrong",
                         [r for r in quality if not any(r["solver_correct"].values())])

            def benchmark_like(r):  # a seed source's, or a long trace of the long-trace source
                return r["source_type"] in args.seed_sources or (
                    args.long_source in r["source_type"] and r["length"] > args.long_min_length)
            seeds = stage("3a benchmark seeds the teacher got right",
                          [r for r in hard if r["teacher_correct"] and benchmark_like(r)])
            prior = benchmark_prior(hard) if args.uniform_until < args.n else {}
            if args.uniform_until < args.n and not prior:
                print(f"      no {GPQA} or {AIME} questions left: "
                      "the last picks are uniform over domains too")
            chosen = stage("3b domains uniformly, 2^-rank by length",
                           sample_by_length(hard, args.n, rng, seeds[:args.n], args.uniform_until,
                                            prior),
                           f"of {len({r['domain'] for r in hard})} domains")
    if len(chosen) < args.n and args.selection != "all":
        print(f"note: only {len(chosen)} questions were available, not {args.n}")
    out = [{k: v for k, v in dict(r, answer=r["attempt"]).items() if k != "attempt"}
           for r in chosen]
    jsonl.write_jsonl(args.out, out)
    summarize(args, out, stages)


# ----------------------------------------------------------------------------------------------
# features: difficulty, length and domain

def difficulty(args, records):
    """{(question hash, solver or "teacher"): right, wrong or None (ungraded)}: every solver's reply
    and the teacher's attempt, graded against the record's reference solution by benchmarks.py's
    grader, here in the main thread (math-verify uses signal.alarm), or by --llm-model
    (--grader llm)."""
    if parallel.WORLD > 1:  # replicas of --tp ranks, each generating its share (parallel.py)
        parallel.init_distributed(args.device)
    questions = list(dict.fromkeys(r["question"] for r in records))
    answers = solve(args, questions, args.cache + ".answers.jsonl")
    parallel.workers_leave()  # under torchrun the other ranks leave here: the rest is rank 0's
    attempts = {(r["question_hash"], "teacher"):
                r.get("attempt") if r.get("distill_status") == "ok" else None for r in records}
    texts = {**answers, **attempts}
    solution = {r["question_hash"]: r.get("solution") for r in records}
    verdicts = llm_grades(args, records, texts) if args.grader == "llm" else {}
    grades, statuses = {}, Counter()
    for k, text in texts.items():
        if args.grader == "llm":
            rec = verdicts.get(k) if text is not None and solution[k[0]] is not None else None
            if rec:
                grades[k], status = rec["value"], rec["status"]
            else:
                grades[k], status = None, "no attempt or reference"
        else:
            grades[k], status = grade_math(solution[k[0]], text)
        statuses[(k[1] if k[1] == "teacher" else "solver " + k[1], status, grades[k])] += 1
    for (who, status, correct), n in sorted(statuses.items(), key=str):
        verdict = "right" if correct else "wrong" if correct is False else "ungraded"
        print(f"  {who}: {n} {verdict} ({status})")
    return grades


def solve(args, questions, cache_path):
    """{(question hash, solver): the solver's reply text}, generating what the cache lacks and
    appending each reply to it the moment it is done. Under torchrun each replica (parallel.py)
    answers its share of the questions into a part file; rank 0 alone reads the cache, and appends
    every replica's replies to it once all are done."""
    if parallel.RANK == 0:
        parallel.recover_parts(cache_path)  # the replies of a stopped data-parallel run
    cached = jsonl.resume(cache_path) if parallel.RANK == 0 else []
    answers = {(r["question_hash"], r["solver"]): r["text"] for r in cached}
    for solver in args.solvers:
        todo = parallel.broadcast([q for q in questions
                                   if (jsonl.question_hash(q), solver) not in answers])
        if parallel.RANK == 0:
            print(f"difficulty: {solver}: {len(questions) - len(todo)} answers cached, "
                  f"{len(todo)} to generate")
        if not todo:
            continue
        if solver == "mini":  # the built-in task's programmatic stand-in: no model to load
            parallel.set_layout(1)  # every process a replica
        else:
            import sample
            model, tokenizer = sample.load_for_generation(solver, args.device, args.dtype,
                                                          args.solver_max_tokens, args.batch_size,
                                                          tp=args.tp)[:2]
        mine, saved = parallel.deal(todo), []
        with parallel.open_output(cache_path) as f:
            def save(q, text):  # one flushed line per reply: a crash loses only the rows in flight
                answers[(jsonl.question_hash(q), solver)] = text
                jsonl.write_line(f, {"question_hash": jsonl.question_hash(q), "solver": solver,
                                     "text": text})
                saved.append(q)
                if parallel.RANK == 0 and (len(saved) % 100 == 0 or len(saved) == len(mine)):
                    print(f"  {solver}: {len(saved)} of {len(mine)}", flush=True)
            if solver == "mini":
                from machinery import mini
                for q in mine:
                    save(q, mini.solver(q, mini.SOLVER_ERROR_RATE, args.seed))
            else:
                model_replies(args, model, tokenizer, mine, save if parallel.writes() else None)
        position = {jsonl.question_hash(q): n for n, q in enumerate(todo)}
        for r in parallel.merge_parts(cache_path, lambda r: position[r["question_hash"]]):
            answers[(r["question_hash"], r["solver"])] = r["text"]
    return answers


def model_replies(args, model, tokenizer, todo, save):
    """save(question, text) for each of todo as a checkpoint's reply finishes, through sample.py as
    a plain chat, in one generate call. save is None on a rank that does not write (parallel.py)."""
    from machinery import chat
    import sample
    too_long = {q for q in todo
                if len(tokenizer.encode(chat.prompt_text(q))) >= args.solver_max_tokens}
    fits = [q for q in todo if q not in too_long]
    for q in todo:
        if save and q in too_long:  # a prompt longer than the context: no answer, ungraded
            save(q, None)
    # a row's draws depend only on the seed and its question: batching and resuming change nothing
    if fits:
        on_result = (lambda i, out: save(fits[i], out["text"])) if save else None
        sample.generate(model, tokenizer, fits, think=False, max_tokens=args.solver_max_tokens,
                        temperature=SOLVER_TEMPERATURE, seed=args.seed, batch_size=args.batch_size,
                        progress=False, on_result=on_result)


def llm_grades(args, records, texts):
    """{(question hash, who): record} of --llm-model's verdicts with s1's grading prompt, from the
    cache, asking for those it lacks (an attempt and a reference solution are both needed)."""
    path = args.cache + ".grades.jsonl"
    question = {r["question_hash"]: r["question"] for r in records}
    solution = {r["question_hash"]: r.get("solution") for r in records}
    cached = {(r["question_hash"], r["who"]): r for r in jsonl.resume(path)
              if r["grader"] == args.llm_model}
    todo = [{"question_hash": h, "who": who, "grader": args.llm_model}
            for (h, who), text in texts.items()
            if (h, who) not in cached and text is not None and solution[h] is not None]
    print(f"grading: {len(cached)} cached, {len(todo)} to ask {args.llm_model}")

    def messages(task):
        h = task["question_hash"]
        return [{"role": "system", "content": GRADING_PROMPT},
                {"role": "user", "content": f"## Problem\n{question[h]}\n\n"
                                            f"## Attempt\n{texts[(h, task['who'])]}\n\n"
                                            f"## Correct answer\n{solution[h]}"}]
    for r in ask_llm(args, args.llm_model, todo, path, messages, yes_or_no):
        cached[(r["question_hash"], r["who"])] = r
    return cached


def length(args, records):
    """Thinking tokens of each record's trace in the target tokenizer; None where there is no
    trace."""
    from machinery import chat
    tokenizer = chat.load_tokenizer(args.tokenizer)
    thinking = [r["thinking"] if r.get("distill_status") == "ok" else None for r in records]
    have = [t for t in thinking if t is not None]
    ids = tokenizer(have, add_special_tokens=False)["input_ids"] if have else []
    counts = iter(len(x) for x in ids)
    lengths = [next(counts) if t is not None else None for t in thinking]
    if have:
        known = [n for n in lengths if n is not None]
        print(f"length: {len(known)} traces, thinking tokens min {min(known)}, "
              f"median {statistics.median(known):.0f}, max {max(known)} ({args.tokenizer})")
    return lengths


def domain(args, records):
    """Each record's domain: its own, else one of the 61 MSC classes of --msc by --llm-model (s1's
    prompt and parse: the reply's last two characters), or with --classifier none its source."""
    if args.classifier == "none":
        domains = [r.get("domain") or r["source_type"] for r in records]
    else:
        with open(args.msc) as f:
            classes = json.load(f)
        msc = {e["code"]: e["title"] for e in classes}
        rubrics = "\n\n".join(e["prompt"] for e in classes)
        question = {r["question_hash"]: r["question"] for r in records}
        path = args.cache + ".domains.jsonl"
        cached = {r["question_hash"]: r for r in jsonl.resume(path)
                  if r["classifier"] == args.llm_model}
        need = list(dict.fromkeys(r["question_hash"] for r in records if not r.get("domain")))
        todo = [{"question_hash": h, "classifier": args.llm_model} for h in need if h not in cached]
        print(f"domain: {len(records) - len(need)} records have one, {len(need) - len(todo)} "
              f"cached, {len(todo)} to ask {args.llm_model}")

        def messages(task):
            return [{"role": "system", "content": CLASSIFY_PROMPT},
                    {"role": "user",
                     "content": f"## Question\n{question[task['question_hash']]}\n\n"
                                f"## Classification rubrics\n{rubrics}"}]

        def parse(reply):
            return msc.get(reply[-2:]) if reply[-2:].isdigit() else None
        for r in ask_llm(args, args.llm_model, todo, path, messages, parse):
            cached[r["question_hash"]] = r
        domains = [r.get("domain") or (cached.get(r["question_hash"]) or {}).get("value")
                   for r in records]
    print(f"domain: {len(set(domains) - {None})} domains, "
          f"{domains.count(None)} records unclassified")
    return domains


# ----------------------------------------------------------------------------------------------
# Grading against the reference solution, and asking an LLM

def reference_answer(solution):
    """The short answer a reference solution ends in: its last \\boxed{}, GSM8K's "#### 18", what
    follows its last "Answer:", or the whole solution when it is one short line. None if there is
    none."""
    if not solution or not str(solution).strip():
        return None
    solution = str(solution).strip()
    if (boxed := benchmarks.last_boxed(solution)) is not None:
        return boxed.strip()
    if "####" in solution:
        return solution.rsplit("####", 1)[1].strip().replace(",", "")
    if matches := list(re.finditer(r"(?i)answer\s*:", solution)):
        return solution[matches[-1].end():].strip().split("\n")[0].strip() or None
    return solution if "\n" not in solution and len(solution) <= 64 else None


def grade_math(solution, text):
    """(correct, status) with benchmarks.py's grader; correct is None where there is nothing sound
    to compare (no short reference answer, a reference math-verify cannot read, a math-verify error
    or timeout)."""
    gold = reference_answer(solution)
    if gold is None:
        return None, "no reference answer"
    if text is None:
        return None, "no attempt"
    if re.fullmatch(r"[A-D]", gold):  # multiple choice (GPQA after fix_gpqa): compare letters
        letter = benchmarks.extract_letter(text)
        return letter == gold, "ok" if letter else "no answer"
    answer, where = benchmarks.extract_answer(text)
    if answer is None:
        return False, "no answer"
    correct, status = benchmarks.math_equal(gold, answer, where)
    return (correct, status) if status in ("ok", "unparsed") else (None, status)


def yes_or_no(reply):  # s1's parse of a grading reply: its last line
    return {"Yes": True, "No": False}.get(reply.split("\n")[-1])


def ask_llm(args, model, tasks, cache_path, messages, parse):
    """Ask model about every task (a dict naming it) on --workers threads (api.ask_all) and append
    each reply to cache_path as it arrives: the task with the value parse() reads from the reply,
    the status and the reply. A reply parse() rejects is asked again, at most api.RETRIES times,
    then saved as malformed. Returns the records saved."""
    def ask(task):
        for _ in range(api.RETRIES + 1):
            try:
                message = api.chat_completion(args.base_url, model, messages(task),
                                              args.api_key_env)
            except (RuntimeError, KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                return dict(task, value=None, status=f"error: {e}", reply=None)
            reply = (message.get("content") or "").rstrip()
            if (value := parse(reply)) is not None:
                return dict(task, value=value, status="ok", reply=reply)
        return dict(task, value=None, status="malformed", reply=reply)

    saved = []
    if tasks:
        with open(cache_path, "a") as f:
            def save(record):
                jsonl.write_line(f, record)
                saved.append(record)
            api.ask_all(tasks, ask, save, args.workers, f"  {model}")
    return saved


# ----------------------------------------------------------------------------------------------
# select: the filters, the prior and the loop

BOLD_WITH_DIGIT = re.compile(r"\*\*(?=.*\d)[^\s\]]*\*\*")
# = any f"p{i}." for i in 1..999, s1's loop, in one pass
PROBLEM_NUMBER = re.compile(r"p[1-9]\d{0,2}\.")


def formatting_problem(record):
    """The first rule of s1's stage 1b (data/filter.ipynb cell 7) the question breaks, or None: no
    Asymptote figure (unless from AIME), no image, no "p1." numbering, no bold run followed by a
    digit on its line."""
    q = record["question"]
    if "[asy]" in q:
        return None if "AIME" in record["source_type"] else "[asy] figure, not from AIME"
    if "![Image]" in q:
        return "![Image]"
    if PROBLEM_NUMBER.search(q):
        return '"p<N>." numbering'
    return "bold run, then a digit" if BOLD_WITH_DIGIT.search(q) else None


def formatting_ok(record):
    return formatting_problem(record) is None


def missing_feature(record):
    """Why s1's stage 1a (data/filter.ipynb cell 4: any feature None, "API errors") drops the
    record, or None."""
    if record.get("distill_status") != "ok":
        return "no trace"
    # no grade without a reference, in s1 too (featurization.py l. 56-63)
    if record.get("solution") is None:
        return "no reference solution"
    for name in ("length", "domain"):
        if record.get(name) is None:
            return "no " + name
    if record.get("teacher_correct") is None or None in record.get("solver_correct", {}).values():
        # benchmarks.py's grader compares short answers; s1's Claude also graded proofs (its
        # prompt says how)
        if reference_answer(record["solution"]) is None:
            return "no grade: no short reference answer"
        return "no grade"
    return None


def benchmark_prior(records):
    """s1's prior for the last picks: the domains of the AIME and GPQA questions, GPQA scaled to
    half of AIME's mass (int() as s1), normalised."""
    g = Counter(r["domain"] for r in records if r["source_type"] == GPQA)
    a = Counter(r["domain"] for r in records if r["source_type"] == AIME)
    if g and a:
        ratio = 0.5 * sum(a.values()) / sum(g.values())
        g = Counter({d: int(c * ratio) for d, c in g.items()})
    total = g + a  # Counter addition keeps positive counts only, as s1's
    return {d: c / sum(total.values()) for d, c in total.items()}


def sample_by_length(records, n, rng, seeds=(), uniform_until=UNIFORM_UNTIL, prior=None,
                     weighted=True):
    """s1's loop (docs/s1.md §3.6): pick a domain (uniformly, or by the prior once uniform_until
    are selected), then one of its questions with p ∝ 2^-rank of thinking length (rank 0 = the
    longest; weighted=False: uniformly), remove it from the domain's pool; a drawn seed adds
    nothing. Returns the selection."""
    pools = {}
    for r in records:
        pools.setdefault(r["domain"], []).append(r)
    domains, prior = sorted(pools), dict(prior or {})
    prior = {d: w for d, w in prior.items() if d in pools}
    selected, chosen = list(seeds), {r["question_hash"] for r in seeds}
    while len(chosen) < n and domains:
        if len(chosen) < uniform_until or not prior:
            d = domains[rng.integers(len(domains))]
        else:
            names = sorted(prior)
            w = np.array([prior[x] for x in names])
            d = names[rng.choice(len(names), p=w / w.sum())]
        pool = pools[d]
        if weighted:
            lengths = np.array([r["length"] for r in pool])
            rank = (len(pool) - 1) - np.argsort(np.argsort(lengths, kind="stable"), kind="stable")
            p = 2.0 ** -rank
            record = pool.pop(rng.choice(len(pool), p=p / p.sum()))
        else:
            record = pool.pop(rng.integers(len(pool)))
        if record["question_hash"] not in chosen:
            chosen.add(record["question_hash"])
            selected.append(record)
        if not pool:
            domains.remove(d)
            prior.pop(d, None)
    return selected


def summarize(args, records, stages):
    """The domain histogram (printed and saved) and a histogram of thinking lengths (PNG)."""
    stem = re.sub(r"\.jsonl$", "", args.out)
    domains = Counter(r["domain"] for r in records).most_common()
    lengths = [r["length"] for r in records if r.get("length") is not None]
    print(f"{len(records)} questions in {len(domains)} domains -> {args.out}")
    for d, n in domains[:25]:
        print(f"  {n:>5}  {d}")
    if len(domains) > 25:
        print(f"  ... and {len(domains) - 25} more domains")
    thinking = {"mean": statistics.mean(lengths), "median": statistics.median(lengths),
                "min": min(lengths), "max": max(lengths)} if lengths else None
    summary = {"selection": args.selection, "seed": args.seed, "n": args.n, "data": args.data,
               "stages": dict(stages), "domains": dict(domains), "thinking_tokens": thinking}
    jsonl.write_atomic(stem + ".summary.json", json.dumps(summary, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths or [0], bins=40, color="tab:blue")
    ax.set(xlabel="thinking tokens", ylabel="questions",
           title=f"{os.path.basename(args.out)}: {len(records)} questions")
    fig.tight_layout()
    with jsonl.atomic(stem + ".lengths.png", "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    print(f"wrote {stem}.summary.json and {stem}.lengths.png")


# ----------------------------------------------------------------------------------------------
# Command line

SELECT_VS_S1 = """s1's three-stage filter and selection loop (data/filter.ipynb); prints how many
records each rule of stage 1a and 1b removes.

Where we differ from s1, and why:
  - grades come from `features`, whose default grader is eval.py's offline one (math-verify): it
    compares short answers, so a record whose reference has none (a proof) gets no grade and goes
    at 1a, counted as "no grade: no short reference answer". s1's Claude graded those records (its
    prompt says how to judge a proof); `features --grader llm` does as s1, with s1's prompt and
    model;
  - stage 3a's long-trace source is simplescaling/openaimath, the name collect gives MATH
    records; s1's notebook tests 'qfq/openaimath', which no record of s1's collect_data.py carries
    (an older name);
  - the loop draws from a seeded numpy Generator (--seed); s1's notebook drew from numpy's
    unseeded global state, so its exact 1,000 cannot be redrawn.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="difficulty, length and domain of every question (cached)")
    f.add_argument("--data", required=True, help="prepare.py distill's output")
    f.add_argument("--out", required=True,
                   help="the records with solver_correct, teacher_correct, length, domain")
    f.add_argument("--cache", help="prefix of the feature caches (default: OUT without .jsonl)")
    f.add_argument("--solvers", nargs="*", default=SOLVERS,
                   help="models (hub names or directories) whose right answers mark a question "
                        "easy; none: keep all; mini: the built-in task's programmatic solver "
                        "(mini.py)")
    f.add_argument("--solver-max-tokens", type=cli.at_least(2), default=SOLVER_CONTEXT,
                   help="context: prompt + answer")
    f.add_argument("--batch-size", type=cli.at_least(1), default=16,
                   help="checkpoint solvers: most sequences decoded together")
    f.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    f.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    cli.add_tp_flag(f)
    f.add_argument("--seed", type=cli.at_least(0), default=0, help="solvers' sampling")
    f.add_argument("--grader", choices=["math", "llm"], default="math",
                   help="math: eval.py's offline grader, which leaves a reference without a short "
                        "answer (a proof) ungraded, so select drops the record at 1a; llm: "
                        "--llm-model with s1's grading prompt, which grades those too, as s1 did")
    f.add_argument("--tokenizer", default=TOKENIZER, help="the target model's (length feature)")
    f.add_argument("--classifier", choices=["llm", "none"], default="llm",
                   help="none: a record's domain is its source")
    f.add_argument("--llm-model", default=LLM_MODEL,
                   help="grades (--grader llm) and classifies domains (s1 used Claude 3.5 Sonnet "
                        "for both)")
    f.add_argument("--msc", default=os.path.join(ROOT, "data/s1/msc.json"),
                   help="s1's domain classes")
    f.add_argument("--base-url", default=LLM_URL, help="OpenAI-compatible endpoint of the LLMs")
    f.add_argument("--api-key-env", default=LLM_KEY_ENV,
                   help="environment variable holding the key")
    f.add_argument("--workers", type=cli.at_least(1), default=16, help="requests in flight")
    s = sub.add_parser("select",
                       help="the three-stage filter and the diversity/length sampling loop",
                       description=SELECT_VS_S1,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--data", required=True, help="curate.py features' output")
    s.add_argument("--out", required=True, help="the selection, JSONL (train.py --data reads it)")
    s.add_argument("--n", type=cli.at_least(1), default=N_SELECTED)
    s.add_argument("--seed", type=cli.at_least(0), default=0)
    s.add_argument("--selection", choices=["s1", "random", "diverse", "longest", "all"],
                   default="s1",
                   help="s1: the three stages; the paper's ablations from the quality-filtered "
                        "pool: random 1K, diverse (uniform domain, uniform question), longest 1K; "
                        "all: every record with a trace (59K-full)")
    s.add_argument("--seed-sources", nargs="*", default=[GPQA, AIME],
                   help="stage 3a: sources whose hard questions the teacher got right are kept")
    s.add_argument("--long-source", default=MATH,
                   help="stage 3a: ... and of this source those with long traces")
    s.add_argument("--long-min-length", type=cli.at_least(0), default=LONG_MIN_LENGTH,
                   help="stage 3a: 'long' is more thinking tokens than this")
    s.add_argument("--uniform-until", type=cli.at_least(0), default=UNIFORM_UNTIL,
                   help="3b: domains are drawn uniformly until this many are selected, then by "
                        "the AIME/GPQA domain prior (s1's notebook); set it to --n for uniform "
                        "throughout")
    args = p.parse_args(argv)
    if args.command == "features":
        args.cache = args.cache or re.sub(r"\.jsonl$", "", args.out)
    return args


if __name__ == "__main__":
    cli.main(main)
    parallel.exit_now()
