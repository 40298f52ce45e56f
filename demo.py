"""demo.py: the whole s1 pipeline in miniature on a laptop CPU (`make demo`).

The same stage scripts as the real thing, with small numbers, on built-in task families whose
harder questions need more reasoning steps (mini.py: prepare.py's "mini" source, with a
programmatic teacher that writes step-by-step traces and sometimes corrects a slip after "Wait"):

    prepare.py collect   held-out questions           -> test.jsonl
    prepare.py collect   a pool of questions, decontaminated against them -> pool.jsonl
    prepare.py distill   a trace and answer for each  -> traces.jsonl
    curate.py features   difficulty (a programmatic solver that answers without thinking and slips
                         on long questions), trace length, domain (the task family) -> features.jsonl
    curate.py select     quality, difficulty, diversity -> s1K.jsonl (the miniature s1K)
    train.py             a 0.8M-parameter Qwen2 from scratch on it -> train/final
    eval.py              held-out questions under budget forcing: thinking caps, then "Wait"s
                         -> eval/results.md, eval/scaling.png

Each stage is skipped when its output exists (rerun with --force to redo it); each command is
printed before it runs, so any stage can be rerun by hand.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="where every stage writes")
    p.add_argument("--force", action="store_true", help="redo every stage, even those already done")
    p.add_argument("--small", action="store_true", help="a few-minute version (the CI test)")
    return p.parse_args(argv)


def stage(name, output, cmd, force):
    """Run one stage's command unless its output already exists."""
    if os.path.exists(output) and not force:
        print(f"== {name}: done already ({output}); --force redoes it", flush=True)
        return
    if force and name == "train" and os.path.isdir(os.path.dirname(output)):
        shutil.rmtree(os.path.dirname(output))  # train.py refuses to overwrite a run it was not told to resume
    print(f"== {name}\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"== {name}: {time.time() - t0:.0f} s", flush=True)


def reading(results_path):
    """A few plain sentences on what the curve shows, from eval.py's results.json."""
    with open(results_path) as f:
        results = json.load(f)
    runs = results["runs"]
    caps = [r for r in runs if r["setting"].isdigit()]
    natural = next((r for r in runs if r["setting"] == "nocap"), None)
    waits = [r for r in runs if r["setting"].startswith("wait")]
    m = next(iter(results["scaling"].values()))
    lo, hi = caps[0], caps[-1]
    top = natural or hi  # the largest budget: no cap at all
    lines = [f"Budget forcing on {lo['questions']} held-out questions:",
             f"- capping thinking at {lo['setting']} tokens gives {100 * lo['accuracy']:.1f} % accuracy, "
             f"at {hi['setting']} tokens {100 * hi['accuracy']:.1f} %, with no cap {100 * top['accuracy']:.1f} % "
             f"({100 * (top['accuracy'] - lo['accuracy']):+.1f} points from the smallest budget to the largest);",
             f"- Control {100 * m['control']:.0f} % (every run's average thinking stayed within its budget), "
             f"Scaling {m['scaling']:.1f} accuracy points per doubling of thinking, Performance {m['performance']:.1f} %;"]
    if natural:
        lines.append(f"- without a cap the model thinks {natural['avg_thinking_tokens']:.0f} tokens on average;")
    gains = {g["setting"]: g for g in results.get("gains", [])}
    for w in waits:
        g = gains.get(w["setting"])  # absent from a results.json written before eval.py paired its runs
        versus = (f"{100 * g['difference']:+.1f} ± {100 * g['se']:.1f} points vs {g['against']}, paired SE" if g else
                  f"{100 * (w['accuracy'] - top['accuracy']):+.1f} points vs {top['setting']}")
        lines.append(f"- {w['setting']} (suppress the end of thinking, append \"Wait\"): "
                     f"{w['avg_thinking_tokens']:.0f} tokens, {100 * w['accuracy']:.1f} % ({versus}).")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    out = lambda *p: os.path.join(args.out, *p)
    os.makedirs(args.out, exist_ok=True)
    # Sizes: the full demo takes ~14 minutes on 2 cores; --small about one. From scratch, a 0.8M model
    # needs a few thousand distinct traces, so the miniature "s1K" keeps 2,000 (measured: 1,000 x 20
    # epochs scored lower). s1 keeps 1,000, but fine-tunes a pretrained 32B model.
    pool, keep, test, epochs = (400, 120, 40, 3) if args.small else (8000, 2000, 200, 10)
    caps = ["8", "16", "32", "64"] if args.small else ["8", "16", "24", "32", "48", "64", "96"]
    stages = [
        # The held-out questions come first, so that the pool is decontaminated against them (docs/s1.md §1.3).
        # They are as hard as what curation keeps (7-9 steps), as AIME is hard.
        ("held-out questions", out("test.jsonl"),
         [PY, "prepare.py", "collect", "--sources", "mini", "--n", str(test), "--seed", "1", "--steps", "7", "9",
          "--eval-sets", "aime24", "--out", out("test.jsonl")]),
        ("collect", out("pool.jsonl"),
         [PY, "prepare.py", "collect", "--sources", "mini", "--n", str(pool), "--seed", "0",
          "--eval-sets", "mini", "--eval-data", f"mini={out('test.jsonl')}", "--out", out("pool.jsonl")]),
        ("distill", out("traces.jsonl"),
         [PY, "prepare.py", "distill", "--teacher", "mini", "--pool", out("pool.jsonl"), "--out", out("traces.jsonl")]),
        ("features", out("features.jsonl"),
         [PY, "curate.py", "features", "--data", out("traces.jsonl"), "--solvers", "mini", "--tokenizer",
          "data/demo-model", "--classifier", "none", "--out", out("features.jsonl")]),
        ("select", out("s1K.jsonl"),
         [PY, "curate.py", "select", "--data", out("features.jsonl"), "--n", str(keep), "--seed", "0",
          "--out", out("s1K.jsonl")]),
        # --pack: the same updates, 1.5x faster on a CPU. No periodic checkpoints: on CPU, every step
        # after a DCP save of the optimizer ran ~1.7x slower (measured on a 2-core CPU).
        ("train", out("train", "final"),
         [PY, "train.py", "--model", "data/demo-model", "--init", "random", "--data", out("s1K.jsonl"),
          "--out", out("train"), "--device", "cpu", "--dtype", "float32", "--save-dtype", "float32", "--pack",
          "--epochs", str(epochs), "--global-batch", "16", "--lr", "3e-3", "--block-size", "512"]),
        ("eval", out("eval", "results.json"),
         [PY, "eval.py", "--model", out("train", "final"), "--benchmarks", "mini", "--data", f"mini={out('test.jsonl')}",
          "--settings", *caps, "nocap", "wait1", "wait2", "--max-tokens", "512", "--dtype", "float32",
          "--batch-size", "64", "--out", out("eval")]),
    ]
    for name, output, cmd in stages:
        stage(name, output, cmd, args.force)
    with open(out("eval", "results.md")) as f:
        print("\n" + f.read())
    print(reading(out("eval", "results.json")))
    print(f"\nplot: {out('eval', 'scaling.png')}")


if __name__ == "__main__":
    main()
