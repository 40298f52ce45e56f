"""demo.py: the whole s1 pipeline in miniature on a laptop CPU (`make demo`).

The same stage scripts as the real thing, with small numbers, on mini.py's search family
(prepare.py's "mini" source): "Which of evbhl is after m?", answered by checking the letters
in order, one line each. Its programmatic teacher sometimes stops before it has found the letter
and guesses, as a model that stops before it has checked; in some traces it writes "Wait" there
and goes on. So a cap on thinking cuts the search short, and forcing "Wait" resumes it:

    prepare.py collect   held-out questions           -> test.jsonl
    prepare.py collect   a pool of questions, decontaminated against them -> pool.jsonl
    prepare.py distill   a trace and answer for each  -> traces.jsonl
    curate.py features   difficulty (a programmatic solver that answers without thinking and slips
                         on long questions), trace length, domain (the task family)
                         -> features.jsonl
    curate.py select     quality, difficulty, diversity -> s1K.jsonl (the miniature s1K)
    train.py             a 0.8M-parameter Qwen2 from scratch on it -> train/final
    eval.py              held-out questions under budget forcing: thinking caps, then "Wait"s
                         -> eval/results.md, eval/results_scaling.png

Every stage runs on one pinned numeric path (PINNED), so that any x86-64 machine trains the same
model bit for bit; the run ends by printing its weights' sha256 next to README's. A stage is
skipped when its output exists and was made by the same command from the same code; once one
stage runs, every later one runs too. Each command is printed, so any stage can be rerun by hand.
docs/demo.md explains the design and keeps the record of how it was found.
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from machinery import cli

ROOT = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
MODEL = os.path.join("data", "demo-model")  # the demo model's config.json and its tokenizer

# ----------------------------------------------------------------------------------------------
# The miniature's recipe (docs/demo.md: why each number is what it is)

# s1: 59K -> 1,000; the held-out questions stand in for AIME
POOL, KEEP, HELD_OUT = 2300, 2000, 500
# s1: 5 epochs at 1e-5 (a pretrained 32B; ours starts from random)
EPOCHS, LR, GLOBAL_BATCH = 10, 1e-3, 16
# --pack: a whole global batch in one row, one forward per step
BLOCK_SIZE = 4096
# thinking budgets in tokens, then no cap, then "Wait"s
CAPS = ["8", "16", "24", "32", "48", "64", "96"]
# the training seed of `make demo`: the model whose sha256 README states
SEED = 42
# --small: the CI test
SMALL = dict(pool=400, keep=120, held_out=40, epochs=12, caps=["8", "16", "32", "64"])

# The numeric path, pinned before torch loads, so that training gives the same bits on every x86-64
# machine (docs/demo.md, "The same model everywhere"): MKL's reproducible branch that Intel
# documents for Intel and AMD processors alike, ATen's kernels without machine-specific vector code,
# and a fixed thread count (a sum split over threads is added in another order). It costs about 2x.
PINNED = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
THREADS = 2

# What `make demo` trains on the pinned path with 2 threads, torch 2.13.0's CPU wheel, x86-64.
README_SHA256 = "46241e582d3c452e18d85131d6ab5ad2174a73092dab4ea12390d101219c906b"
# The lowest and highest of SPREAD_SEEDS's runs (demo.py --spread, 2026-12-06; docs/demo.md), in
# points.
MEASURED = {"no cap": (53.8, 54.6), "gap": (42.8, 43.6), "Wait x1": (44.0, 46.2),
            "Wait x2": (45.0, 46.2)}
SPREAD_SEEDS = (42, 1, 2, 3, 4, 5, 6, 7)  # training seeds stand in for machines of other kinds
# --compare: the paper's Table 3 and Figure 4 in miniature, on the first 100 held-out questions
# (about 8 minutes on 2 cores): budget forcing against rejection sampling at the same budgets
# (temperature 1, up to 64 tries), and majority voting over 8 samples at temperature 1 against
# "Wait" at matched total thinking tokens.
COMPARE_QUESTIONS, COMPARE_SAMPLES, COMPARE_TRIES = 100, 8, 64


# ----------------------------------------------------------------------------------------------
# The story

def main(argv=None):
    args, train_flags = parse_args(argv)
    model = model_dir(args.model_config, args.out)
    env = {**PINNED, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if args.unpinned:
        env = {"OMP_NUM_THREADS": str(args.threads)}
    out = lambda *p: os.path.join(args.out, *p)
    sizes = SMALL if args.small else dict(pool=POOL, keep=KEEP, held_out=HELD_OUT, epochs=EPOCHS,
                                          caps=CAPS)
    stages = data_stages(out, sizes)
    if not args.spread:
        stages += model_stages(out, out, sizes, model, args.seed, train_flags)
        if args.compare:
            stages += compare_stages(out)
        run_stages(stages, env, model, args.force)
        print(report(args.out, model, args.small))
        if args.compare:
            print(compare_report(out))
        return
    runs = []
    for seed in SPREAD_SEEDS:
        run = lambda *p: os.path.join(args.out, "spread", f"seed-{seed}", *p)
        print(f"== seed {seed}", flush=True)
        stages += model_stages(out, run, sizes, model, seed, train_flags)
        run_stages(stages, env, model, args.force)
        runs.append((f"seed {seed}", figures(run("eval", "results.json"))))
        stages = []  # the data stages once
    print("\n" + spread_table(runs))


def data_stages(out, sizes):
    """(name, output, command) of the stages that make the miniature s1K and its held-out
    questions."""
    return [
        # The held-out questions come first, so that the pool is decontaminated against them
        # (docs/s1.md §1.2). They have 8-10 letters, the middle of what curation keeps (5-13), as
        # AIME is hard. The pool has 5-13 letters, so that traces go past the teacher's give-ups
        # (at every fifth letter) often.
        ("held-out questions", out("test.jsonl"),
         [PY, "prepare.py", "collect", "--sources", "mini", "--n", str(sizes["held_out"]),
          "--seed", "1", "--steps", "7", "9", "--eval-sets", "aime24",
          "--out", out("test.jsonl")]),
        ("collect", out("pool.jsonl"),
         [PY, "prepare.py", "collect", "--sources", "mini", "--n", str(sizes["pool"]),
          "--seed", "0", "--steps", "4", "12", "--eval-sets", "mini",
          "--eval-data", f"mini={out('test.jsonl')}", "--out", out("pool.jsonl")]),
        ("distill", out("traces.jsonl"),
         [PY, "prepare.py", "distill", "--teacher", "mini", "--pool", out("pool.jsonl"),
          "--out", out("traces.jsonl")]),
        ("features", out("features.jsonl"),
         [PY, "curate.py", "features", "--data", out("traces.jsonl"), "--solvers", "mini",
          "--tokenizer", MODEL, "--classifier", "none", "--out", out("features.jsonl")]),
        ("select", out("s1K.jsonl"),
         [PY, "curate.py", "select", "--data", out("features.jsonl"), "--n", str(sizes["keep"]),
          "--seed", "0", "--out", out("s1K.jsonl")]),
    ]


def model_stages(data, run, sizes, model, seed, train_flags):
    """train and eval: data(...) names the data stages' files, run(...) where this model goes."""
    return [
        # --pack with a block of 4096: the global batch of 16 traces (~1,000 tokens) is one row, so
        # a step is one forward and backward. No periodic checkpoints: on a CPU, every step after a
        # DCP save of the optimizer ran ~1.7x slower.
        ("train", run("train", "final"),
         [PY, "train.py", "--model", model, "--init", "random", "--data", data("s1K.jsonl"),
          "--out", run("train"), "--device", "cpu", "--dtype", "float32",
          "--save-dtype", "float32", "--pack",
          "--epochs", str(sizes["epochs"]), "--global-batch", str(GLOBAL_BATCH), "--lr", str(LR),
          "--block-size", str(BLOCK_SIZE), "--seed", str(seed), *train_flags]),
        ("eval", run("eval", "results.json"),
         [PY, "eval.py", "--model", run("train", "final"), "--benchmarks", "mini",
          "--data", f"mini={data('test.jsonl')}",
          "--settings", *sizes["caps"], "nocap", "wait1", "wait2",
          "--max-tokens", "512", "--dtype", "float32", "--batch-size", "64", "--out", run("eval"),
          "--report", "results"]),
    ]


def compare_stages(out):
    """The paper's comparisons on the demo model (--compare): Table 3's budget forcing against
    rejection sampling, and Figure 4's sequential against parallel scaling."""
    caps = ["8", "16", "24", "32"]
    common = ["--model", out("train", "final"), "--benchmarks", "mini",
              "--data", f"mini={out('test.jsonl')}", "--limit", str(COMPARE_QUESTIONS),
              "--max-tokens", "512", "--dtype", "float32", "--batch-size", "64"]
    return [
        ("table 3", out("compare", "table3", "table3.json"),
         [PY, "eval.py", *common, "--settings", *caps, "nocap",
          *[f"reject{c}x{COMPARE_TRIES}" for c in caps],
          "--out", out("compare", "table3"), "--report", "table3"]),
        ("figure 4", out("compare", "figure4", "figure4.json"),
         [PY, "eval.py", *common, "--settings", "nocap", "wait1", "wait2",
          "--n", str(COMPARE_SAMPLES), "--temperature", "1.0",
          "--out", out("compare", "figure4"), "--report", "figure4"]),
    ]


def compare_report(out):
    """What --compare prints: the method table, and majority voting against "Wait" at about the
    same total thinking."""
    with open(out("compare", "table3", "table3.json")) as f:
        methods = json.load(f)["scaling"]["mini"]
    lines = ["", f"Table 3 in miniature ({COMPARE_QUESTIONS} held-out questions, greedy budget "
             f"forcing; rejection sampling at temperature 1, up to {COMPARE_TRIES} tries):", "",
             "| method | Control | Scaling | Performance | settings |", "|---|---|---|---|---|"]
    for name, m in methods.items():
        tries = ("; tries per sample " + ", ".join(f"{t:.1f}" for t in m["avg_tries"])
                 if "avg_tries" in m else "")
        scaling = "-" if m["scaling"] is None else f"{m['scaling']:.1f}"
        lines.append(f"| {name} | {100 * m['control']:.0f} % | {scaling} | "
                     f"{m['performance']:.1f} | {', '.join(m['settings'])}{tries} |")
    with open(out("compare", "figure4", "figure4.json")) as f:
        runs = {r["setting"]: r for r in json.load(f)["runs"]}
    voting = runs["nocap"]["parallel"]
    lines += ["", f"Figure 4 in miniature ({COMPARE_SAMPLES} samples per question at temperature "
              "1): accuracy against the thinking tokens spent per question in all", ""]
    for p in voting:
        lines.append(f"- majority voting over {p['k']} sample(s): {p['total_thinking_tokens']:.0f} "
                     f"tokens, {100 * p['maj']:.1f} %")
    for name in ("wait1", "wait2"):
        r = runs[name]
        lines.append(f"- {name}, one sample: {r['avg_thinking_tokens']:.0f} tokens, "
                     f"{100 * r['accuracy']:.1f} %")
    lines.append(f"\nplots: {out('compare', 'table3', 'table3_scaling.png')}, "
                 f"{out('compare', 'figure4', 'figure4_parallel.png')}")
    return "\n".join(lines)


def report(out, model, small):
    """What `make demo` prints at the end: eval.py's table, a reading of it, and the run against
    README's (its figures and its weights' sha256)."""
    results = os.path.join(out, "eval", "results.json")
    with open(os.path.join(out, "eval", "results.md")) as f:
        lines = ["", f.read(), reading(results)]
    if not small:
        with open(results) as f:
            sha = json.load(f)["config"]["weights"]
        weights = os.path.join(out, "train", "final", "model.safetensors")
        lines += ["", against_readme(figures(results)), "", same_bits(sha, weights, model)]
    lines.append(f"\nplot: {os.path.join(out, 'eval', 'results_scaling.png')}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Helpers: running stages, and reading their results

def model_dir(config, out):
    """The model directory train.py starts from: data/demo-model, or with --model-config a copy of
    its tokenizer beside the given config.json (checked here, in one line, before any stage
    runs)."""
    from machinery import hf_checkpoint
    # a config the architecture cannot run stops here, naming the field
    hf_checkpoint.read_config(config)
    if os.path.samefile(config, os.path.join(ROOT, MODEL, "config.json")):
        return MODEL
    path = os.path.join(out, "model")
    os.makedirs(path, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, MODEL, name), path)
    shutil.copy(config, os.path.join(path, "config.json"))
    return path


def code_hash(model):
    """The sha256 of what the stages' results depend on besides their commands: the code (the
    stages and machinery/) and the model's config and tokenizer. A change to any of them makes
    every stage run again."""
    model = os.path.join(ROOT, model)
    files = sorted(os.path.join(folder, f) for folder in (ROOT, os.path.join(ROOT, "machinery"))
                   for f in os.listdir(folder) if f.endswith(".py"))
    h = hashlib.sha256()
    for path in files + [os.path.join(model, f) for f in sorted(os.listdir(model))]:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def run_stages(stages, env, model, force):
    """Run each stage unless its output exists and a stamp beside it shows the same command, the
    same environment and the same code; once one stage runs, every later one runs too (its inputs
    are new). A stage that runs first clears its output and the files named after it (distill's
    cache of traces, curate's answers), so nothing of an older run is reused."""
    code, redo = code_hash(model), force
    for name, output, cmd in stages:
        stamp = os.path.join(os.path.dirname(output), f".{name.replace(' ', '-')}.stage")
        key = json.dumps({"command": cmd[1:], "env": env, "code": code})
        if not redo and os.path.exists(output) and read_text(stamp) == key:
            print(f"== {name}: done already ({output}); --force redoes it", flush=True)
            continue
        redo = True
        clear(name, output)
        variables = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"== {name}\n$ {variables} {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        returncode = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}).returncode
        if returncode:
            raise SystemExit(f"demo: {name} failed (exit code {returncode}); "
                             "its command and its error are above")
        with open(stamp, "w") as f:
            f.write(key)
        print(f"== {name}: {time.time() - t0:.0f} s", flush=True)


def clear(name, output):
    """Remove what a stage made before: train's and eval's directories (train.py refuses to
    overwrite a run it was not told to resume), else its file and the files named after it."""
    folder = os.path.dirname(output)
    if name in ("train", "eval", "table 3", "figure 4"):  # eval.py would resume its samples
        shutil.rmtree(folder, ignore_errors=True)
        return
    stem = os.path.basename(output).split(".")[0]
    for f in os.listdir(folder) if os.path.isdir(folder) else []:
        if f.split(".")[0] == stem:
            os.remove(os.path.join(folder, f))


def read_text(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def figures(results_path):
    """The demo's headline numbers from eval.py's results.json, in accuracy points."""
    with open(results_path) as f:
        results = json.load(f)
    acc = {r["setting"]: 100 * r["accuracy"] for r in results["runs"]}
    caps = [s for s in acc if s.isdigit()]
    gains = {g["setting"]: (100 * g["difference"], 100 * g["se"]) for g in results["gains"]}
    return {"no cap": acc["nocap"], "smallest cap": acc[caps[0]],
            "gap": acc["nocap"] - acc[caps[0]],
            "Wait x1": gains["wait1"][0], "Wait x2": gains["wait2"][0],
            "Wait x1 SE": gains["wait1"][1], "Wait x2 SE": gains["wait2"][1]}


def reading(results_path):
    """A few plain sentences on what the curve shows, from eval.py's results.json."""
    with open(results_path) as f:
        results = json.load(f)
    runs = results["runs"]
    caps = [r for r in runs if r["setting"].isdigit()]
    natural = next(r for r in runs if r["setting"] == "nocap")
    m = next(iter(results["scaling"].values()))["budget forcing"]
    lo, hi = caps[0], caps[-1]
    lines = [f"Budget forcing on {lo['questions']} held-out questions:",
             f"- capping thinking at {lo['setting']} tokens gives "
             f"{100 * lo['accuracy']:.1f} % accuracy, "
             f"at {hi['setting']} tokens {100 * hi['accuracy']:.1f} %, "
             f"with no cap {100 * natural['accuracy']:.1f} % "
             f"({100 * (natural['accuracy'] - lo['accuracy']):+.1f} points "
             f"from the smallest budget to no cap);",
             f"- Control {100 * m['control']:.0f} % "
             f"(every run's average thinking stayed within its budget), "
             f"Scaling {m['scaling']:.1f} accuracy points per doubling of thinking, "
             f"Performance {m['performance']:.1f} %;",
             f"- without a cap the model thinks {natural['avg_thinking_tokens']:.0f} tokens "
             f"on average;"]
    gains = {g["setting"]: g for g in results["gains"]}
    for w in (r for r in runs if r["setting"].startswith("wait")):
        g = gains[w["setting"]]
        lines.append(f"- {w['setting']} (suppress the end of thinking, append \"Wait\"): "
                     f"{w['avg_thinking_tokens']:.0f} tokens, {100 * w['accuracy']:.1f} % "
                     f"({100 * g['difference']:+.1f} ± {100 * g['se']:.1f} points "
                     f"vs {g['against']}, paired SE).")
    return "\n".join(lines)


def against_readme(f):
    """How this run's figures compare with README's runs."""
    lines = [f"Against README's {len(SPREAD_SEEDS)} training seeds:"]
    for key, (lo, hi) in MEASURED.items():
        where = "inside" if lo - 0.05 <= f[key] <= hi + 0.05 else "OUTSIDE"
        unit = (lambda x: f"{x:.1f} %") if key == "no cap" else (lambda x: f"{x:+.1f} points")
        lines.append(f"- {key}: {unit(f[key])}, {where} README's range, {unit(lo)} to {unit(hi)}")
    return "\n".join(lines)


def same_bits(sha, weights, model):
    """The trained weights' sha256 against README's, and what a difference means."""
    line = f"weights: sha256 {sha} ({weights})"
    if README_SHA256 is None or model != MODEL:
        return line
    if sha == README_SHA256:
        return line + "\n  = README's: this machine trained the same model, bit for bit"
    return (line + f"\n  README's is {README_SHA256}: another model (another torch, "
                   "a machine without MKL such as an ARM laptop, --threads, --unpinned "
                   "or training flags); its figures then fall in the seeds' range")


def spread_table(runs):
    """runs: [(name, figures)] -> a markdown table, a line per run, then mean and min-max, then the
    demo's goals against them (no cap - smallest cap >= 30 and Wait x2 >= +5 with more than two
    paired SE on every run; no-cap spread <= 6 points)."""
    keys = ["no cap", "smallest cap", "gap", "Wait x1", "Wait x2"]
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, f in runs:
        lines.append(f"| {name} | {f['no cap']:.1f} | {f['smallest cap']:.1f} | {f['gap']:+.1f} | "
                     f"{f['Wait x1']:+.1f} ± {f['Wait x1 SE']:.1f} | "
                     f"{f['Wait x2']:+.1f} ± {f['Wait x2 SE']:.1f} |")
    stats = lambda k: [f[k] for _, f in runs]
    lines.append("| mean | " + " | ".join(f"{sum(stats(k)) / len(runs):.1f}" for k in keys) + " |")
    lines.append("| min-max | "
                 + " | ".join(f"{min(stats(k)):.1f} to {max(stats(k)):.1f}" for k in keys) + " |")
    met = lambda ok: "met" if ok else "NOT met"
    spread = max(stats("no cap")) - min(stats("no cap"))
    wait2 = all(f["Wait x2"] >= 5 and f["Wait x2"] > 2 * f["Wait x2 SE"] for _, f in runs)
    lines.append(f"\ngap >= 30 on every run: {met(min(stats('gap')) >= 30)}; no-cap spread "
                 f"{spread:.1f} <= 6: {met(spread <= 6)}; "
                 f"Wait x2 >= +5 and > 2 SE on every run: {met(wait2)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The command line

def parse_args(argv=None):
    """(args, training flags): what follows a lone -- is passed to train.py as it is."""
    argv = sys.argv[1:] if argv is None else list(argv)
    train_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s [options] [-- train.py flags]")
    p.add_argument("--out", default="runs/demo", help="where every stage writes")
    p.add_argument("--force", action="store_true", help="redo every stage, even those already done")
    p.add_argument("--small", action="store_true", help="a one-minute version (the CI test)")
    p.add_argument("--seed", type=cli.at_least(0), default=SEED,
                   help="training seed: the model's initialisation and the order of its batches")
    p.add_argument("--model-config", default=os.path.join(ROOT, MODEL, "config.json"),
                   help="the model to train: a Qwen2 config.json "
                        "(sizes; the vocabulary is the demo tokenizer's)")
    p.add_argument("--threads", type=cli.at_least(1), default=THREADS,
                   help="threads per stage; part of the pinned path: "
                        "another count trains another model")
    p.add_argument("--unpinned", action="store_true",
                   help="this machine's fastest kernels instead of PINNED "
                        "(about 2x faster; another model)")
    p.add_argument("--compare", action="store_true",
                   help="then the paper's Table 3 and Figure 4 in miniature on the trained model: "
                        "budget forcing against rejection sampling, and majority voting against "
                        "'Wait' (about 8 more minutes; under --out/compare/)")
    p.add_argument("--spread", action="store_true",
                   help=f"train and evaluate once per seed of {SPREAD_SEEDS} (under --out/spread/) "
                        "and print the table README's ranges come from")
    return p.parse_args(argv), train_flags


if __name__ == "__main__":
    cli.main(main)
