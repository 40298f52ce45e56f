"""eval.py: AIME24, AIME25, MATH500 and GPQA Diamond with budget forcing, graded offline.
Start reading at main(): the questions (benchmarks.py), the samples still missing
(generate_missing, through sample.py), then the report (summarize, scaling_metrics,
extension_gains, markdown, plot). parse_setting says what each budget-forcing setting means.

    # s1's budget forcing ("auto")
    python eval.py --model simplescaling/s1-32B --tokenizer Qwen/Qwen2.5-32B-Instruct
    # s1's grid: caps 500 to 16000, auto, Wait x1, 2, 4, 6
    python eval.py --model DIR --settings sweep
    # s1's extrapolation strings: nothing, Hmm, Alternatively, Wait
    python eval.py --model DIR --settings ablation
    # s1 without budget forcing ("nottc") and with it
    python eval.py --model DIR --settings none auto
    # the paper's Table 3: every test-time method, each with its own Control, Scaling, Performance
    python eval.py --model DIR --benchmarks aime24 --settings table3
    # Figure 4: maj@k and pass@k for k = 1, 2, 4, 8 against budget forcing, in total tokens
    python eval.py --model DIR --benchmarks aime24 --settings auto --n 8 --temperature 0.6
    # GPQA Diamond from a local file
    python eval.py --model DIR --data gpqa=/path/gpqa_diamond.jsonl.gz --benchmarks gpqa
    # every GPU: replicas of --tp GPUs each (default: the smallest that fits; 32B on H100s: 2)
    torchrun --nproc-per-node 8 eval.py --model simplescaling/s1-32B --settings sweep
    # memory per GPU, before renting
    python eval.py --dry-run --model simplescaling/s1-32B --gpus 8

A sweep costs about its longest setting: every setting of a question forks from one shared
thinking (sample.py), a cap where it cuts, a "Wait" where the thinking would have ended.

Prompts are s1's, and grading runs offline (s1 paid for gpt-4o-mini): benchmarks.py loads the
questions (GPQA's options in s1's shuffled order, seeded with --gpqa-seed) and grades every answer;
sample.py applies the chat template and budget forcing.

Everything lands in --out: samples.jsonl (every sample: prompt, text, token counts, forced events,
extracted answer, verdict; a rerun reuses the finished ones), and a report named after the run
(--report): NAME.md and NAME.json (accuracy with standard errors, compute_sample_stats'
statistics, each method's Control / Scaling / Performance as the paper's Table 3, each "Wait" run
against its natural end with a paired standard error, and with --n > 1 maj@k and pass@k against
total thinking tokens), NAME_scaling.png (accuracy vs average thinking tokens, one panel per
benchmark, as Figure 1) and, with --n > 1, NAME_parallel.png (majority voting against budget
forcing, as Figure 4).
"""
import argparse
import itertools
import json
import math
import os
import re
import statistics

from machinery import benchmarks, chat, cli, jsonl, parallel
from machinery.benchmarks import BENCHMARKS

# ----------------------------------------------------------------------------------------------
# The recipe: s1's evaluation (its eval/commands.sh)

PAPER_BENCHMARKS = ("aime24", "math500", "gpqa")  # the paper's three (Table 1)
MAX_TOKENS = 32768   # the context, prompt + thinking + answer: max_gen_toks=32768 in every s1 run
IGNORE_STR = "Wait"  # what replaces the end of thinking (thinking_n_ignore_str=Wait)
TEMPERATURE = 0.0    # greedy, as s1 evaluated (its commands set no temperature)
# s1's budget-forcing runs, s1 eval/commands.sh l. 25-35: max_tokens_thinking=500, 1000, 2000, 4000,
# 8000, 16000 and auto, then auto with thinking_n_ignore=1, 2, 4, 6 and thinking_n_ignore_str=Wait.
# Figure 1's points come from these runs.
SWEEP = ["500", "1000", "2000", "4000", "8000", "16000", "auto", "wait1", "wait2", "wait4", "wait6"]
# s1's extrapolation ablation, commands.sh l. 31, 38-40, 33: no extension, then the end of thinking
# ignored twice with no string, "Hmm", "Alternatively" and "Wait".
ABLATION = ["auto", "ignore2", "ignore2:Hmm", "ignore2:Alternatively", "wait2"]
NOTTC = "none"  # s1's "nottc" run (commands.sh l. 22): no <|im_start|>think, one plain generation
NOTTC_METHOD = "no thinking (nottc)"  # a point of its own: no budget, no method metrics
# The paper's Table 3 (test-time scaling methods on AIME24), as s1's eval/commands.sh ran them:
# token-conditional control at 2048-16384 tokens, with and without budget forcing at the same cap
# (l. 56-66, its own model simplescaling/token-conditional-control); step-conditional at 16-256
# steps, with and without "<|im_start|>0" ending the thinking (l. 68-80, its own model
# simplescaling/step-conditional-control); class-conditional short and long (l. 88-89); rejection
# sampling at 3500-16000 tokens (l. 43-48). Which budgets the paper's budget-forcing row used is
# not in the repository; we take the token-conditional ones, so that the two rows compare, and
# auto, s1's default (five runs, as the paper's row counts); auto is also what class-conditional
# control's short and long are measured against.
TABLE3 = (["2048", "4096", "8192", "16384", "auto"]
          + [f"tokens{n}" for n in (2048, 4096, 8192, 16384)]
          + [f"{n}+tokens{n}" for n in (2048, 4096, 8192, 16384)]
          + [f"steps{n}" for n in (16, 32, 64, 128, 256)]
          + [f"steps{n}+bf" for n in (16, 32, 64, 128, 256)]
          + ["short", "long"]
          + [f"reject{n}" for n in (3500, 4000, 5000, 6000, 8000, 16000)])
PRESETS = {"sweep": SWEEP, "ablation": ABLATION, "table3": TABLE3}
# Rejection sampling's temperature: s1's rejection runs set temperature=1 (commands.sh l. 43-48)
REJECTION_TEMPERATURE = 1.0
# Methods that s1 ran with a model of their own (--method-model)
OWN_MODEL_METHODS = ("token-conditional", "step-conditional")
# scaling.png's panel titles, after Figure 1's
TITLES = {"aime24": "Competition math (AIME24)", "aime25": "Competition math (AIME25)",
          "math500": "Mathematical problem solving (MATH500)",
          "gpqa": "PhD-level science (GPQA Diamond)"}

# ----------------------------------------------------------------------------------------------
# The run: the questions, the samples still missing, the report

def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        from machinery import plan
        return plan.print_generation_plan(args.model, args.gpus, args.max_tokens, args.batch_size,
                                          args.gpu_memory_gib, args.tp)
    # the questions first: a bad file stops the run before torch is imported or --out is made
    questions = {b: benchmarks.load_benchmark(b, args.data.get(b), args.limit, args.gpqa_seed)
                 for b in args.benchmarks}
    os.makedirs(args.out, exist_ok=True)
    if args.dtype == "auto":  # stored resolved: a rerun on another device cannot mix precisions
        import sample
        args.dtype = sample.resolve_dtype(args.dtype, args.device)
    # Samples are keyed by benchmark, setting, question and index: what else shaped them is fixed
    config = {k: getattr(args, k) for k in ("model", "tokenizer", "dtype", "max_tokens",
                                            "temperature", "top_p", "ignore_str", "seed",
                                            "gpqa_seed")}
    config["method_models"] = args.method_model  # older configs hold none: {} (below)
    config_path = os.path.join(args.out, "eval_config.json")
    old = jsonl.read_json(config_path)
    if old:
        for k in ("model", "tokenizer"):  # a rerun without --model continues with the stored one
            config[k] = config[k] if getattr(args, k) else old[k]
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    # Which weights made the samples, so that another model at the same path (retrained there) is
    # refused rather than scored from the old one's samples. A hub name is its own key; a directory
    # that is gone leaves the samples to be reported as they are. Rank 0 reads the files (once).
    from machinery import hf_checkpoint
    fingerprint = hf_checkpoint.fingerprint_for_resume(config["model"],
                                                       old.get("weights_fingerprint"))
    config["weights"] = fingerprint and fingerprint["sha256"]
    config["method_weights"], config["method_fingerprints"] = {}, {}
    for method, name in args.method_model.items():
        earlier = old.get("method_fingerprints", {}).get(method)
        print_ = hf_checkpoint.fingerprint_for_resume(name, earlier)
        config["method_weights"][method] = print_ and print_["sha256"]
        config["method_fingerprints"][method] = print_
    if old:  # a file that records no gpqa_seed was made with seed 0, the default
        jsonl.same_config(config_path, config, f"use another --out than {args.out}, or delete it",
                          defaults={"gpqa_seed": 0, "method_models": {}, "method_weights": {}},
                          ignore=("method_fingerprints",) + (
                              () if rank == 0 else ("weights", "method_weights")))
    args.model, args.tokenizer = config["model"], config["tokenizer"]

    path = os.path.join(args.out, "samples.jsonl")
    if rank == 0:
        parallel.recover_parts(path)  # the rows of a stopped data-parallel run
    done = read_samples(path) if rank == 0 else {}
    wanted = [(b, s, i, q) for b in args.benchmarks for s in args.settings for i in range(args.n)
              for q in questions[b]]
    todo = [t for t in wanted if (t[0], t[1], t[3]["id"], t[2]) not in done]
    # torchrun: each replica (of --tp ranks, each holding a slice of the model) runs its share of
    # the rows (generate_missing); rank 0 writes them all
    if world > 1:
        device, world, rank = parallel.init_distributed(args.device, args.dist_timeout_min)
        todo = parallel.broadcast(todo)
    if rank == 0:
        print(f"{len(wanted) - len(todo)} of {len(wanted)} samples already in {path}; "
              f"generating {len(todo)}")
    if todo:
        if rank == 0:
            saved = dict(config, weights_fingerprint=fingerprint)
            jsonl.write_atomic(config_path, json.dumps(saved, indent=1) + "\n")
        model_of = {label: model_for(args, s) for label, s in args.setting_of.items()}
        for name in dict.fromkeys(model_of[t[1]] for t in todo):
            mine = [t for t in todo if model_of[t[1]] == name]
            model, tokenizer = load_model(args, name)
            generate_missing(args, mine, path, done, model, tokenizer, rank=rank)
            del model  # the next method's model loads into the memory this one frees
    if world > 1:
        parallel.workers_leave()  # ranks other than 0 exit here: the report is rank 0's

    runs, scaling, accuracies = [], {}, {}
    for b in args.benchmarks:
        for label in args.settings:
            setting = args.setting_of[label]
            by_question = [[done[(b, label, q["id"], i)] for i in range(args.n)]
                           for q in questions[b]]
            accuracies[(b, label)] = question_accuracies(by_question)
            runs.append(summarize(b, label, by_question, budget_of(setting, args.max_tokens),
                                  method_of(setting), setting.control))
            r = runs[-1]
            print(f"{b} {label}: accuracy {fmt(r['accuracy'], r['accuracy_se'])} % over "
                  f"{r['questions']} questions, {r['avg_thinking_tokens']:.0f} thinking tokens on "
                  "average")
            # never swallowed: every ungraded sample is named
            for status, ids in r["failures"].items():
                more = " ..." if len(ids) > 8 else ""
                print(f"  {status}: {len(ids)} sample(s), ids {', '.join(ids[:8])}{more}")
        scaling[b] = method_metrics([r for r in runs if r["benchmark"] == b], args.max_tokens)
    gains = extension_gains(accuracies)
    name = config["model"] or "model"
    saved = {k: v for k, v in config.items() if k != "method_fingerprints"}
    results = {"model": name, "config": saved, "runs": runs, "scaling": scaling, "gains": gains}
    base = os.path.join(args.out, args.report)
    jsonl.write_atomic(base + ".json", json.dumps(results, indent=1) + "\n")
    table = markdown(name, saved, runs, scaling, gains)
    jsonl.write_atomic(base + ".md", table)
    plot(name, runs, base + "_scaling.png")
    written = [base + ".md", base + ".json", base + "_scaling.png"]
    if args.n > 1:
        plot_parallel(name, runs, base + "_parallel.png")
        written.append(base + "_parallel.png")
    print(table)
    print(f"wrote {', '.join(written)} (samples: {path})")
    return runs, scaling


# ----------------------------------------------------------------------------------------------
# Settings

def parse_setting(text, ignore_str=IGNORE_STR):
    """A setting's text -> (its label, its sample.Setting). Parts joined by "+":
    - a cap: "500" caps thinking at 500 tokens (s1's max_tokens_thinking=500); "auto", s1's default,
      caps it at what the context leaves: context - prompt - "<|im_start|>answer\nFinal Answer:" -
      100. Ours is per row (this row's prompt); s1's harness takes the longest prompt of the batch
      (vllm_causallms.py l. 264), and with --batch_size auto the batch is every question of every
      task in the run (l. 526-529), so its caps are a little lower than ours. "nocap": the thinking
      may run to the end of the context (the harness without max_tokens_thinking, l. 270-271).
      Without a cap part the cap is auto.
    - an extension: "waitK" ignores the end of thinking K times, appending ignore_str (default
      "Wait"); "ignoreK" appends nothing (s1's thinking_n_ignore without a string), "ignoreK:TEXT"
      appends TEXT (e.g. ignore2:Hmm).
    - the paper's baselines (§5.4, Table 3): "tokensN" and "stepsN" add "Think for up to N
      tokens/steps." (token- and step-conditional control; "2048+tokens2048" is token-conditional
      control with budget forcing, "steps16+bf" ends the thinking at "<|im_start|>0"); "short" and
      "long" add class-conditional control's prompts; "rejectB" is rejection sampling at budget B
      (temperature 1 and up to sample.MAX_TRIES tries, as s1's rejection_sample=true,temperature=1;
      "rejectBxT": at most T tries).
    - "minN": the end of thinking may not be drawn before N thinking tokens.
    - "NAME=VALUE": any field of sample.Setting (a variant without a short name).
    "none" alone is s1's nottc: no thinking prefix at all."""
    import sample
    parts = [p.strip() for p in text.strip().split("+")]
    if parts == [""] or "" in parts:
        raise ValueError(f"setting {text!r}: an empty part")
    if [p.lower() for p in parts] == [NOTTC]:
        return NOTTC, sample.Setting(think=False)
    fields, cap, extension, rest = {}, None, None, []

    def put(part, **values):
        """Each field is set by one part: "500+max_thinking_tokens=1000" is an error, not 1000."""
        twice = sorted(set(values) & set(fields))
        if twice:
            raise ValueError(f"setting {text!r}: {part!r} sets {twice[0]} a second time")
        fields.update(values)
    for part in parts:
        low = part.lower()
        head, colon, string = part.partition(":")
        m = re.fullmatch(r"(wait|ignore)([1-9]\d*)", head.lower())
        if low in ("auto", "nocap") or low.isdigit() and int(low) > 0:
            cap = low if not low.isdigit() else str(int(low))  # "0500" is "500"
            put(part, max_thinking_tokens=int(cap) if cap.isdigit() else
                None if cap == "nocap" else "auto")
        elif m and (not colon or m.group(1) == "ignore" and string):
            # K >= 1: "wait0" would be auto under another name
            extension = m.group(0).lower() + (f":{string}" if colon else "")
            put(part, num_ignore=int(m.group(2)),
                ignore_str=ignore_str if m.group(1) == "wait" else string)
        elif "=" in part:
            put(part, **sample.setting_fields(part))
            rest.append(part)
        else:
            m = re.fullmatch(r"(tokens|steps|min|reject)([1-9]\d*)(?:x([1-9]\d*))?", low)
            if low in ("short", "long"):
                put(part, control=low)
            elif low == "bf":
                put(part, step_forcing=True)
            elif m and m.group(1) in ("tokens", "steps") and not m.group(3):
                put(part, control=m.group(1), control_value=int(m.group(2)))
            elif m and m.group(1) == "min" and not m.group(3):
                put(part, min_thinking_tokens=int(m.group(2)))
            elif m and m.group(1) == "reject":
                put(part, max_thinking_tokens=int(m.group(2)),
                    own_temperature=REJECTION_TEMPERATURE,
                    tries=int(m.group(3) or sample.MAX_TRIES))
            else:
                raise ValueError(f"setting {text!r}: {part!r} is not a cap (e.g. 500, auto, "
                                 "nocap), waitK, ignoreK, ignoreK:TEXT, tokensN, stepsN, bf, "
                                 "short, long, "
                                 "rejectB, rejectBxT, minN, NAME=VALUE or none")
            rest.append(low)
    fields.setdefault("max_thinking_tokens", "auto")
    try:
        setting = sample.setting_from(fields)
    except ValueError as e:
        raise ValueError(f"setting {text!r}: {e}") from None
    shown = [cap] if cap and (cap != "auto" or not (extension or rest)) else []
    label = "+".join(shown + ([extension] if extension else []) + rest)
    return label, setting


def method_of(setting):
    """The paper's Table 3 method that a setting belongs to: Control, Scaling and Performance are
    computed over each method's runs apart."""
    if not setting.think:
        return NOTTC_METHOD
    if setting.tries:
        return "rejection sampling"
    if setting.control == "tokens":
        forced = isinstance(setting.max_thinking_tokens, int)
        return "token-conditional" + " + budget forcing" * forced
    if setting.control == "steps":
        return "step-conditional" + " + budget forcing" * setting.step_forcing
    if setting.control in ("short", "long"):
        return "class-conditional"
    if setting.min_thinking_tokens:
        return "minimum thinking"
    return "budget forcing"


def budget_of(setting, max_tokens):
    """A run's pre-specified budget (a_min, a_max, unit) for the Control metric: the cap or the
    control prompt's N; step-conditional control counts steps."""
    if setting.control in ("tokens", "steps"):
        return 0, setting.control_value, setting.control
    cap = setting.max_thinking_tokens
    return setting.min_thinking_tokens, cap if isinstance(cap, int) else max_tokens, "tokens"


# ----------------------------------------------------------------------------------------------
# Metrics

def mean_se(values):
    """Mean and its standard error over questions (None for a single question)."""
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def paired_difference(a, b):
    """Mean and standard error of the per-question differences a_i - b_i between two runs on the
    same questions (a_i, b_i: each question's accuracy in either run). Paired, because the two runs
    share their questions: the SE of a difference of two runs' accuracies is far smaller than
    either run's own SE when they agree on most questions."""
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same questions: {len(a)} and {len(b)}")
    return mean_se([x - y for x, y in zip(a, b)])


def extension_gains(accuracies):
    """accuracies: {(benchmark, setting): per-question accuracies, in one question order}. Every run
    that extends thinking ("Wait" and the other ignore strings, paper §3.1) against the same budget
    left to end naturally ("wait2" against "auto", or "nocap" without an auto run; "4000+wait1"
    against "4000"): the difference in accuracy and its paired standard error."""
    gains = []
    for (benchmark, setting), acc in accuracies.items():
        if not parse_setting(setting)[1].num_ignore:
            continue
        # the same setting without its extension part ("auto" when nothing else is left)
        rest = [p for p in setting.split("+") if not re.fullmatch(r"(wait|ignore)\d+(:.*)?", p)]
        cap = "+".join(rest) or "auto"
        bases = (cap, "nocap" if cap == "auto" else None)
        base = next((c for c in bases if (benchmark, c) in accuracies), None)
        if base is not None:
            diff, se = paired_difference(acc, accuracies[(benchmark, base)])
            gains.append({"benchmark": benchmark, "setting": setting, "against": base,
                          "difference": diff, "se": se})
    return gains


def majority_correct(benchmark, samples):
    """maj@n: is the most common answer right? Samples without an answer do not vote; right answers
    agree with each other; ties go to the answer seen first, as s1's Counter.most_common did."""
    groups = []  # [first sample, votes]
    for s in samples:
        if s["extracted"] is None:
            continue
        for g in groups:
            first = g[0]
            # two wrong answers are compared as the grader compares an answer with the gold
            if first["correct"] == s["correct"] and (
                    s["correct"] or first["extracted"] == s["extracted"]
                    or benchmark != "gpqa" and benchmarks.math_equal(
                        first["extracted"], s["extracted"], s["extracted_from"])[0]):
                g[1] += 1
                break
        else:
            groups.append([s, 1])
    return bool(groups) and max(groups, key=lambda g: g[1])[0]["correct"]


def sample_stats(samples):
    """The statistics of s1's eval/compute_sample_stats.py, per run."""
    thinking = [s["thinking_tokens"] for s in samples]
    sections = [benchmarks.answer_section(s["text"]) for s in samples]
    return {"avg_thinking_tokens": sum(thinking) / len(samples),
            "min_thinking_tokens": min(thinking), "max_thinking_tokens": max(thinking),
            "avg_answer_tokens": sum(s["answer_tokens"] for s in samples) / len(samples),
            "hit_cap": sum(s["ended"] == "capped" for s in samples),
            "out_of_context": sum(s["ended"] == "length" for s in samples),
            "no_answer_or_boxed": sum("Answer:" not in a and "\\boxed" not in a for a in sections),
            "unfinished": sum(not s["finished"] for s in samples),
            # step-conditional control's steps, as compute_sample_stats.py counts them
            "avg_steps": sum(s["text"].count(" steps left\n") for s in samples) / len(samples)}


def question_accuracies(by_question):
    """Each question's share of right samples (its avg@n): what accuracy and paired differences
    average."""
    return [sum(s["correct"] for s in g) / len(g) for g in by_question]


def summarize(benchmark, setting, by_question, budget=(0, MAX_TOKENS, "tokens"),
              method="budget forcing", control=None):
    """One run (a benchmark under one setting): accuracy = avg@n, maj@n, pass@n with standard
    errors, maj@k and pass@k over the first k samples for k = 1, 2, 4, ..., n (parallel scaling),
    the sample statistics, rejection sampling's tries, and every grading failure by kind, with the
    ids it happened to. budget: (a_min, a_max, unit) for the Control metric (budget_of)."""
    samples = [s for group in by_question for s in group]
    acc = mean_se(question_accuracies(by_question))
    n = len(by_question[0])
    parallel = [parallel_at(benchmark, by_question, k)
                for k in sorted({2 ** i for i in range(n.bit_length())} | {n})]
    failures = {}
    for s in samples:
        if s["status"] != "ok":
            failures.setdefault(s["status"], []).append(s["id"])
    tries = [s["tries"] for s in samples if "tries" in s]
    rejection = {"avg_tries": sum(tries) / len(tries),
                 "accepted": sum(s["accepted"] for s in samples) / len(samples)} if tries else {}
    return {"benchmark": benchmark, "setting": setting, "method": method, "control": control,
            "questions": len(by_question), "samples_per_question": n, "accuracy": acc[0],
            "accuracy_se": acc[1], **{k: parallel[-1][k] for k in ("maj", "maj_se", "pass",
                                                                   "pass_se")},
            "parallel": parallel, "budget": list(budget), **sample_stats(samples), **rejection,
            "failures": failures}


def parallel_at(benchmark, by_question, k):
    """Majority voting and coverage over each question's first k samples, with the thinking tokens
    they cost in all (Figure 4's x axis: k samples think k times). A smaller --n reuses the first k
    samples of a larger one: a sample's draws depend on its index alone."""
    firsts = [g[:k] for g in by_question]
    maj = mean_se([float(majority_correct(benchmark, g)) for g in firsts])
    cov = mean_se([float(any(s["correct"] for s in g)) for g in firsts])
    total = sum(s["thinking_tokens"] for g in firsts for s in g) / len(firsts)
    return {"k": k, "maj": maj[0], "maj_se": maj[1], "pass": cov[0], "pass_se": cov[1],
            "total_thinking_tokens": total}


def method_metrics(runs, max_tokens=MAX_TOKENS):
    """The paper's Table 3 for one benchmark: each method's Control, Scaling and Performance over
    its own runs (scaling_metrics), with the settings it ran. Class-conditional prompts ask for
    less or more thinking than none: "short" keeps within the thinking of the "auto" run, "long"
    goes beyond it (without an auto run their Control is unknown)."""
    base = next((r["avg_thinking_tokens"] for r in runs if r["setting"] == "auto"), None)
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        if method == NOTTC_METHOD:
            continue
        mine = [r for r in runs if r["method"] == method]
        points = []
        for r in mine:
            lo, hi, unit = r["budget"]
            if method == "class-conditional":  # no budget without a run to compare with
                lo, hi = ((0, base) if r["control"] == "short" else (base, max_tokens)
                          ) if base is not None else (None, None)
            used = r["avg_steps"] if unit == "steps" else r["avg_thinking_tokens"]
            points.append((r["avg_thinking_tokens"], 100 * r["accuracy"], lo, hi, used))
        known = all(p[2] is not None for p in points)
        metrics = scaling_metrics([p if known else (p[0], p[1], 0, math.inf) for p in points])
        if not known:
            metrics["control"] = None  # class-conditional without an auto run: unknown
        out[method] = {**metrics, "settings": [r["setting"] for r in mine],
                       "unit": mine[0]["budget"][2]}
        if "avg_tries" in mine[0]:
            out[method]["avg_tries"] = [r["avg_tries"] for r in mine]
    return out


def scaling_metrics(runs):
    """The paper's test-time-scaling metrics (§2.4) over one method's runs, each (average thinking
    tokens, accuracy in %, budget min, budget max[, what the budget counts, if not tokens]):
    Control = share of runs whose average lies within their budget; Performance = best accuracy;
    Scaling = average pairwise slope of accuracy against log2(thinking tokens), in points per
    doubling. The paper's eq. (2) prints the slope over tokens, (f(b) - f(a)) / (b - a): on its own
    budget-forcing points that gives 0.0087, while the slope over log2 tokens gives the published
    15 (and -35 for rejection sampling), so log2 it is (docs/s1.md §6.4). Pairs with equal averages
    have no slope and are left out."""
    points = sorted((a, f) for a, f, *_ in runs if a > 0)
    slopes = [(fb - fa) / (math.log2(b) - math.log2(a))
              for (a, fa), (b, fb) in itertools.combinations(points, 2) if b > a]
    # a fifth entry, if any, is what the budget counts (step-conditional control: steps)
    used = [(r[4] if len(r) > 4 else r[0], r[2], r[3]) for r in runs]
    return {"control": sum(lo <= a <= hi for a, lo, hi in used) / len(runs),
            "scaling": sum(slopes) / len(slopes) if slopes else None,
            "performance": max(r[1] for r in runs)}


# ----------------------------------------------------------------------------------------------
# Samples: generated in batches with sample.py, graded, appended to samples.jsonl

def read_samples(path):
    """Finished samples by (benchmark, setting, id, sample). A line cut short by a kill is dropped
    and cut from the file (jsonl.py), so that appending stays clean."""
    return {(r["benchmark"], r["setting"], r["id"], r["sample"]): r for r in jsonl.resume(path)}


# tries and accepted: rejection sampling's
SAVED = ("prompt", "text", "answer", "thinking_tokens", "answer_tokens", "ended", "finished",
         "forced", "tries", "accepted")


def generate_missing(args, todo, path, done, model, tokenizer, rank=0):
    """todo: (benchmark, setting, sample index, question). A question's missing settings and
    samples run together: its settings fork from one shared thinking (sample.py), and every sample
    is written the moment it finishes. A row's random draws depend only on --seed, the question and
    the sample index, so a rerun, or any batch size, draws the same. Under torchrun each replica
    runs its share of the questions into a part file, and rank 0 appends every replica's rows to
    samples.jsonl at the end, in todo's order (parallel.py)."""
    import sample
    settings = args.setting_of
    for benchmark, label, _, q in todo:  # a prompt that leaves no room is named, never cut
        text = settings[label].prompt_text(q["prompt"])
        n = len(tokenizer.encode(text, add_special_tokens=False))
        if n >= args.max_tokens:
            raise SystemExit(f"{benchmark} question {q['id']}: the prompt has {n} tokens, "
                             f"--max-tokens is {args.max_tokens}")
    position = {(b, s, q["id"], i): n for n, (b, s, i, q) in enumerate(todo)}  # the merge's order
    # this replica's share: a question's settings and samples stay together (parallel.py)
    todo = parallel.deal(todo, key=lambda t: (t[0], t[3]["id"]))
    missing = {(b, s, q["id"], i) for b, s, i, q in todo}
    needs = {}  # (benchmark, id) -> the question, its missing settings and sample indices
    for benchmark, setting, i, q in todo:
        entry = needs.setdefault((benchmark, q["id"]), (benchmark, q, {}, set()))
        entry[2][setting] = None
        entry[3].add(i)
    groups = {}  # questions that need the same settings and samples run in one engine call
    for benchmark, q, labels, samples in needs.values():
        groups.setdefault((tuple(labels), max(samples) + 1), []).append((benchmark, q))
    with parallel.open_output(path) as f:
        for (labels, n), questions in groups.items():
            print(f"generating {len(questions)} question(s) x {len(labels)} setting(s) x {n} "
                  "sample(s)")

            def write(index, r):
                per_question = n * len(labels)
                (benchmark, q), rest = questions[index // per_question], index % per_question
                i, j = divmod(rest, len(labels))
                setting = labels[j]
                if (benchmark, setting, q["id"], i) not in missing or not parallel.writes():
                    return  # done already, or written by another rank of this replica
                record = {"benchmark": benchmark, "setting": setting, "id": q["id"], "sample": i,
                          "gold": q["gold"], **{k: r[k] for k in SAVED if k in r},
                          **benchmarks.grade(benchmark, q, r["text"])}
                done[(benchmark, setting, q["id"], i)] = record
                jsonl.write_line(f, record)
            sample.generate(model, tokenizer, [q["prompt"] for _, q in questions], n=n,
                            settings=[settings[s] for s in labels], share=not args.no_share,
                            max_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
                            kv_memory_gb=args.kv_memory_gb, progress=rank == 0, on_result=write)
            if parallel.writes():
                os.fsync(f.fileno())
    key = lambda r: (r["benchmark"], r["setting"], r["id"], r["sample"])
    done.update((key(r), r) for r in parallel.merge_parts(path, lambda r: position[key(r)]))


def model_for(args, setting):
    """The model a setting runs on: its method's own (--method-model), else --model."""
    method = method_of(setting)
    return next((m for k, m in args.method_model.items() if method.startswith(k)), args.model)


def load_model(args, name):
    """The model (this rank's slice of it under torchrun) and its tokenizer."""
    import sample
    if not name:
        raise SystemExit("--model is required: some samples have not been generated yet")
    return sample.load_for_generation(name, args.device, args.dtype, args.max_tokens,
                                      args.batch_size, args.tokenizer,
                                      timeout_min=args.dist_timeout_min, tp=args.tp)[:2]


# ----------------------------------------------------------------------------------------------
# Reports

def fmt(x, se=None, scale=100):
    if x is None:
        return "-"
    return f"{scale * x:.1f}" + (f" ± {scale * se:.1f}" if se is not None else "")


def markdown(model_name, config, runs, scaling, gains=()):
    n = runs[0]["samples_per_question"]
    generation = "Generation: " + ", ".join(f"{k} {v}" for k, v in config.items())
    lines = [f"# {model_name}", "", generation, "",
             f"| benchmark | setting | questions | accuracy % (avg@{n}) | maj@{n} | pass@{n} | "
             "avg thinking tokens | avg answer tokens | hit cap | out of context | "
             "no Answer:/\\boxed | not graded |", "|---" * 12 + "|"]
    for r in runs:
        failed = ", ".join(f"{k} {len(v)}" for k, v in r["failures"].items()) or "0"
        several = r["samples_per_question"] > 1
        maj, cov = ((fmt(r["maj"], r["maj_se"]), fmt(r["pass"], r["pass_se"])) if several
                    else ("-", "-"))
        lines.append(f"| {r['benchmark']} | {r['setting']} | {r['questions']} | "
                     f"{fmt(r['accuracy'], r['accuracy_se'])} | {maj} | {cov} | "
                     f"{r['avg_thinking_tokens']:.0f} | {r['avg_answer_tokens']:.0f} | "
                     f"{r['hit_cap']} | {r['out_of_context']} | {r['no_answer_or_boxed']} | "
                     f"{failed} |")
    lines += ["", "Test-time scaling by method, each over its own runs (the paper's Table 3; "
              "Scaling: accuracy points per doubling of thinking tokens):", "",
              "| benchmark | method | runs | Control | Scaling | Performance | settings |",
              "|---|---|---|---|---|---|---|"]
    for b, methods in scaling.items():
        for method, m in methods.items():
            scores = (f"{fmt(m['control'])} % | {fmt(m['scaling'], scale=1)} | "
                      f"{fmt(m['performance'], scale=1)}")
            ran = ", ".join(m["settings"])
            if m["unit"] == "steps":
                ran += " (Control counts steps)"
            if "avg_tries" in m:
                ran += "; tries per sample " + ", ".join(f"{t:.1f}" for t in m["avg_tries"])
            lines.append(f"| {b} | {method} | {len(m['settings'])} | {scores} | {ran} |")
    if n > 1:
        lines += ["", "Parallel scaling: majority voting (maj@k) and coverage (pass@k) over each "
                  "question's first k samples, against the thinking tokens the k samples spend in "
                  "all (Figure 4). Ties go to the answer seen first, so maj@2 is close to avg@1.",
                  "", "| benchmark | setting | k | total thinking tokens | maj@k | pass@k |",
                  "|---|---|---|---|---|---|"]
        for r in runs:
            for p in r["parallel"]:
                lines.append(f"| {r['benchmark']} | {r['setting']} | {p['k']} | "
                             f"{p['total_thinking_tokens']:.0f} | {fmt(p['maj'], p['maj_se'])} | "
                             f"{fmt(p['pass'], p['pass_se'])} |")
    if gains:
        lines += ["", "Extending thinking against its natural end, on the same questions "
                  "(difference in accuracy points ± the paired standard error, the SE of the "
                  "per-question differences):", "",
                  "| benchmark | setting | against | difference | paired SE |",
                  "|---|---|---|---|---|"]
        for g in gains:
            lines.append(f"| {g['benchmark']} | {g['setting']} | {g['against']} | "
                         f"{100 * g['difference']:+.1f} | {fmt(g['se'])} |")
    return "\n".join(lines) + "\n"


def save_figure(fig, model_name, path):
    import matplotlib.pyplot as plt
    fig.suptitle(model_name, fontsize=9)
    fig.tight_layout()
    with jsonl.atomic(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def plot_parallel(model_name, runs, path):
    """Figure 4's layout: accuracy against the thinking tokens spent per question in all, for
    sequential scaling (budget forcing: every run of that method, avg@n at its average thinking)
    and parallel scaling (majority voting over the first k samples of the first setting run)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["benchmark"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, b in zip(axes[0], names):
        mine = [r for r in runs if r["benchmark"] == b]
        sequential = sorted((r["avg_thinking_tokens"], 100 * r["accuracy"], r["setting"])
                            for r in mine if r["method"] == "budget forcing")
        if sequential:
            ax.plot([p[0] for p in sequential], [p[1] for p in sequential], "o-",
                    color="tab:blue", label="sequential: budget forcing")
            for x, y, label in sequential:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -11), fontsize=7)
        voting = mine[0]["parallel"]
        ax.plot([p["total_thinking_tokens"] for p in voting], [100 * p["maj"] for p in voting],
                "s--", color="tab:orange",
                label=f"parallel: majority voting ({mine[0]['setting']})")
        for p in voting:
            ax.annotate(f"k={p['k']}", (p["total_thinking_tokens"], 100 * p["maj"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        if min([p["total_thinking_tokens"] for p in voting] + [p[0] for p in sequential]) > 0:
            ax.set_xscale("log", base=2)
        ax.set(title=TITLES.get(b, b), xlabel="Thinking tokens per question, in all",
               ylabel="Accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, model_name, path)


def plot(model_name, runs, path):
    """Figure 1's layout: one panel per benchmark, accuracy against average thinking tokens (log2
    axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["benchmark"] for r in runs))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, b in zip(axes[0], names):
        mine = [r for r in runs if r["benchmark"] == b]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        # one curve per method (budget forcing's is Figure 1's); nottc is a point of its own
        for method in methods:
            points = sorted((r["avg_thinking_tokens"], 100 * r["accuracy"], r["setting"],
                             100 * (r["accuracy_se"] or 0)) for r in mine if r["method"] == method)
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[p[3] for p in points], capsize=3, label=method,
                        fmt="s" if method == NOTTC_METHOD else "o-")
            for x, y, label, _ in points:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -11),
                            fontsize=7)
        if min(r["avg_thinking_tokens"] for r in mine) > 0:
            ax.set_xscale("log", base=2)
        ax.set(title=TITLES.get(b, b), xlabel="Average thinking time (tokens)",
               ylabel="Accuracy (%)")
        ax.grid(alpha=0.3)
        if len(methods) > 1:
            ax.legend(fontsize=7)
    save_figure(fig, model_name, path)


# ----------------------------------------------------------------------------------------------
# Command line

def report_name(settings, n, temperature):
    """The default report name: the settings as given (presets by name), --n and --temperature, so
    that the reports of runs that differ in them sit side by side in one --out."""
    name = "-".join(re.sub(r"[^\w.-]+", "_", s) for s in settings)
    name += f"_n{n}" * (n > 1) + f"_t{temperature:g}" * (temperature > 0)
    if len(name) > 60:  # a long list of settings: its start and a hash of the whole
        import hashlib
        name = name[:40] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return "results_" + name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="hub name or local checkpoint directory (not needed when every "
                                   "sample is done)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory or hub name (default: the model's)")
    p.add_argument("--benchmarks", nargs="+", default=list(PAPER_BENCHMARKS),
                   help=f"from {sorted(BENCHMARKS)}, or any name given a source with --data")
    p.add_argument("--data", action="append", default=[], metavar="NAME=SOURCE",
                   help="where a benchmark comes from: a local .jsonl/.jsonl.gz/.json or a hub "
                        "dataset (defaults: the repo's data/eval files; gpqa: "
                        f"{BENCHMARKS['gpqa'][3]} if present, else the gated hub dataset). A new "
                        "NAME adds a benchmark of your own: records with an id, a question or "
                        "problem, and an answer")
    p.add_argument("--settings", nargs="+", default=["auto"],
                   help="settings, parts joined by '+': CAP (e.g. 500), auto, nocap; waitK, "
                        "ignoreK (append nothing), ignoreK:TEXT (e.g. ignore2:Hmm); the paper's "
                        "baselines tokensN, stepsN (+bf: thinking ends at '<|im_start|>0'), short, "
                        "long, rejectB[xTRIES]; minN (no end of thinking before N tokens); "
                        "NAME=VALUE (any field of sample.Setting); none (s1's nottc). "
                        f"'sweep' = {' '.join(SWEEP)} (s1 eval/commands.sh l. 25-35); "
                        f"'ablation' = {' '.join(ABLATION)} (l. 31, 33, 38-40); 'table3' = the "
                        "paper's Table 3 methods as s1 ran them (l. 43-89; see --method-model). "
                        "auto is per row here: context - this row's prompt - the forced answer - "
                        "100; s1's harness subtracts the longest prompt of the batch "
                        "(vllm_causallms.py l. 264)")
    p.add_argument("--method-model", action="append", default=[], metavar="METHOD=MODEL",
                   help="a model for one method's settings: s1 trained its own models for "
                        "token-conditional=simplescaling/token-conditional-control and "
                        "step-conditional=simplescaling/step-conditional-control (with and "
                        "without budget forcing); default: --model")
    p.add_argument("--report", default=None,
                   help="the report's name in --out: NAME.md, NAME.json, NAME_scaling.png and, "
                        "with --n > 1, NAME_parallel.png (default: from --settings, --n and "
                        "--temperature, so that runs with others do not overwrite it)")
    p.add_argument("--ignore-str", default=IGNORE_STR,
                   help="what replaces the end of thinking in waitK settings")
    p.add_argument("--gpqa-seed", type=cli.at_least(0), default=0,
                   help="seed of the GPQA option shuffle (s1's procedure; s1's own order is "
                        "unknown: lm-eval seeds random with 0, vLLM re-seeds it with 1234 before "
                        "the tasks are built)")
    p.add_argument("--max-tokens", type=cli.at_least(2), default=MAX_TOKENS,
                   help="context budget: prompt + thinking + answer")
    p.add_argument("--n", type=cli.at_least(1), default=1,
                   help="samples per question (avg@n, maj@n, pass@n)")
    p.add_argument("--temperature", type=cli.at_least(0, float), default=TEMPERATURE,
                   help="0 = greedy, as s1 evaluated")
    p.add_argument("--top-p", type=cli.between(1e-9, 1), default=1.0)
    p.add_argument("--seed", type=cli.at_least(0), default=0, help="sampling seed")
    p.add_argument("--limit", type=cli.at_least(0), default=0,
                   help="first N questions of each benchmark only (0: all)")
    p.add_argument("--batch-size", type=cli.at_least(1), default=64,
                   help="most sequences decoded together (the engine's slots)")
    p.add_argument("--kv-memory-gb", type=cli.above(0), default=None,
                   help="KV pool size (default: as sample.py)")
    p.add_argument("--no-share", action="store_true",
                   help="run every setting of a question on its own instead of forking them from "
                        "one shared thinking (the same tokens, more compute; for comparison)")
    cli.add_tp_flag(p)
    cli.add_dry_run_flags(p, gpus=8)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dist-timeout-min", type=cli.above(0), default=60,
                   help="torchrun: collective timeout; the other ranks wait while rank 0 grades "
                        "(torch's default: 10 min)")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32", "float16"], default="auto",
                   help="auto: bfloat16 on a GPU, float32 on a CPU. s1 evaluated in float32 "
                        "(eval/commands.sh: dtype=float32 in every vLLM command); bf16 on GPUs is "
                        "our deviation: half the memory (the memory plan and fit check assume "
                        "2-byte weights and KV) at tensor-core speed. Greedy decoding can part "
                        "from fp32's at a near-tie, so single answers may differ; --dtype float32 "
                        "follows s1 with twice the memory")
    p.add_argument("--out", default="runs/eval", help="output directory")
    args = p.parse_args(argv)
    settings = [s for s in args.settings for s in PRESETS.get(s, [s])]
    try:
        parsed = dict(parse_setting(s, args.ignore_str) for s in settings)
    except ValueError as e:
        p.error(f"--settings: {e}")
    args.report = args.report or report_name(args.settings, args.n, args.temperature)
    if not re.fullmatch(r"[\w.-]+", args.report):
        p.error(f"--report {args.report!r}: letters, digits, '.', '-' and '_' only")
    args.settings, args.setting_of = list(parsed), parsed  # the labels, and what each runs
    if args.n > 1 and args.temperature == 0 and any(s.own_temperature is None
                                                    for s in parsed.values()):
        p.error("--n > 1 needs --temperature > 0 (greedy samples are all the same)")
    greedy = [label for label, s in parsed.items() if s.tries > 1 and (
        args.temperature if s.own_temperature is None else s.own_temperature) == 0]
    if greedy:
        p.error(f"--settings {greedy[0]}: rejection sampling at temperature 0 would draw the same "
                "sample every try (rejectB runs at temperature 1; or give own_temperature=T)")
    models = {}
    for spec in args.method_model:
        method, eq, model = spec.partition("=")
        if not eq or method not in OWN_MODEL_METHODS or not model:
            p.error(f"--method-model {spec!r}: expected METHOD=MODEL, METHOD one of "
                    f"{', '.join(OWN_MODEL_METHODS)}")
        models[method] = model
    args.method_model = models
    sources = {}
    for spec in args.data:
        name, eq, source = spec.partition("=")
        if not eq or not name or not source:
            p.error(f"--data {spec!r}: expected NAME=SOURCE")
        sources[name] = source
    args.data = sources
    unused = [name for name in sources if name not in args.benchmarks]
    if unused:
        p.error(f"--data {' '.join(unused)}: not among --benchmarks {' '.join(args.benchmarks)}")
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS and b not in sources]
    if unknown:
        p.error(f"--benchmarks {' '.join(unknown)}: not one of {sorted(BENCHMARKS)}; give its "
                "questions with --data NAME=PATH")
    return args


if __name__ == "__main__":
    cli.main(main)
    parallel.exit_now()
