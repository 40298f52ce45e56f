"""mini.py: the built-in miniature task of `make demo`, standing in for s1's 59K hard questions.

One family of verifiable questions where a harder question needs more reasoning steps: searching
a list of letters for the one after m ("Which of evbhlkgd is after m?"), standing in for s1's
domains (docs/demo.md, "The task, the teacher and the solver"). Two programmatic models go with it:
  teacher  stands in for Gemini / DeepSeek-R1 (prepare.py distill --teacher mini): it reads only
           the question and writes one short line per letter checked. It never slips, but it
           sometimes stops before it has found the answer and guesses, as a model that stops
           before it has checked: the premature stops are the teacher's, and forcing "Wait" is
           what resumes them;
  solver   stands in for Qwen2.5-7B/32B answering without a thinking phase (curate.py features
           --solvers mini): it keeps the running value in its head and slips unnoticed now and
           then, so it is right on short questions and wrong on long ones, which makes those "hard".
Everything is seeded by the question, so the same question always gets the same trace and answer.
"""
import random
import re

from machinery import chat

FAMILY = "search"  # the name in a record's source_type ("mini/search"), domain and metadata
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# The teacher checks the letters in order and, after every GIVE_UP_AFTER without a "yes", gives up
# and answers the last one it checked (a wrong guess), except that at GO_ON_RATE of those moments
# it writes "Wait" and goes on. After a "yes" it writes "Wait" and checks the letter again, and
# again, each time at RECHECK_RATE. The demo's s1K goes on at 36 % of its give-up moments (267 of
# 734): under 50 %, so a model trained on it, decoding greedily, stops there; and 267 traces that
# go on teach it to resume after "Wait".
GIVE_UP_AFTER, GO_ON_RATE, RECHECK_RATE = 5, 0.35, 0.1
# One target: whether a letter comes after m is then a fixed property of the letter (n-z), which
# the model learns on every seed. With eight targets (m-t) it missed letters just after the target
# (r after p) on 7-9 % of questions, and which ones moved with the seed (docs/demo.md).
TARGET = "m"
# And after any other "no" it stops at STOP_RATE, guessing the same way; and before checking a
# letter it has just named ("mk" with no verdict yet) it stops at MIDLINE_STOP_RATE, answering the
# letter it checked last. Too rare to be where a model decoding greedily stops, they show that a
# search cut short, wherever a cap cuts it, is answered with the last letter checked. Without them
# some seeds answered a capped search with the letter after m read straight from the question
# (docs/demo.md).
STOP_RATE = 0.05
MIDLINE_STOP_RATE = 0.05
# The demo tokenizer's whole-word tokens (chat.build_byte_tokenizer): the chat template's words and
# the search question's, one token each, as a trained BPE has its frequent words. With bytes alone
# the prompt took ~160 of an example's ~240 tokens. None of them can occur inside a list of letters
# (each has a space, a capital, or two letters after m), so every letter of a list stays one token.
WORDS = ("system", "user", "assistant", "think", "answer", chat.SYSTEM, "Final Answer:",
         "Which of ", " is after ")


def question(steps, rng):
    """steps + 1 distinct letters, exactly one of them after TARGET in the alphabet. Letters, not
    numbers, written without spaces: each is one byte, so the next letter to check is one look-up
    of the pair "last checked, next" in the question (with two-digit numbers, or letters apart,
    the 0.8M model copied the wrong ones: docs/demo.md)."""
    until = LETTERS.index(TARGET) + 1
    letters = rng.sample(LETTERS[:until], steps)
    letters.insert(rng.randint(0, steps), rng.choice(LETTERS[until:]))
    return f"Which of {''.join(letters)} is after {TARGET}?"


def solve(question):
    """(steps, answer): each step is (the line's start, naming the letter checked before it and
    then the next one: "ev ", the verdict: "yes" or "no"). ValueError if the question is not one
    of the family's."""
    m = re.fullmatch(r"Which of ([a-z]{2,}) is after ([a-z])\?", question)
    if not m:
        raise ValueError("not a question of the built-in family")
    letters, target = list(m.group(1)), m.group(2)
    after = [x for x in letters if x > target]
    if len(after) != 1:
        raise ValueError("not a question of the built-in family: "
                         "not exactly one letter is after the target")
    before = [""] + letters
    steps = [(f"{before[i]}{x} ", "yes" if x > target else "no") for i, x in enumerate(letters)]
    return steps, after[0]


def teacher(question, seed):
    """(thinking, answer) for a built-in question, its stops drawn from a generator seeded by the
    question, so that the same question always gets the same trace. The answer is written
    "Final Answer: v", the words a thinking cap forces (sample.py), so that a capped model answers
    in the form it learned (with "Answer: v", a demo model went on after a forced
    "Final Answer: x" with a second answer of its own: docs/demo.md)."""
    steps, answer = solve(question)
    thinking, answer = search_trace(steps, answer, random.Random(f"{seed}/{question}"))
    return thinking, f"Final Answer: {answer}"


def search_trace(steps, answer, rng):
    """One line per letter until the "yes", with the give-ups, go-ons and rechecks of
    GIVE_UP_AFTER's comment and the stops of STOP_RATE's. Every line is right: all the teacher
    gets wrong is that it sometimes stops too soon."""
    lines = []
    for i, (before, result) in enumerate(steps):
        if i > 0 and rng.random() < MIDLINE_STOP_RATE:  # named the next letter, not checked it
            lines.append(before.strip())
            return "\n".join(lines), before.strip()[0]  # the letter it checked last
        lines.append(before + result)
        if result == "yes":
            while rng.random() < RECHECK_RATE:  # the recheck names the letter alone: "v yes"
                lines += ["Wait", before.strip()[-1] + " " + result]
            return "\n".join(lines), str(answer)
        at_give_up = (i + 1) % GIVE_UP_AFTER == 0
        if at_give_up and rng.random() < GO_ON_RATE:
            lines.append("Wait")
        elif at_give_up or rng.random() < STOP_RATE:  # a give-up, or a stop anywhere else
            return "\n".join(lines), before.strip()[-1]  # the letter it checked last
    raise AssertionError("unreachable: solve() found one letter after the target")


SOLVER_ERROR_RATE = 0.25  # curation's stand-in for Qwen2.5-7B/32B: an unnoticed slip per step


def solver(question, error_rate, seed):
    """A stand-in for s1's difficulty solvers (Qwen2.5-7B/32B answering without a thinking phase)
    on the built-in task: it keeps the running value in its head, and every step has error_rate
    chance of a slip it never notices. So it is right on short questions and wrong on long ones;
    the reply is a plain chat answer. Seeded by the question, as the teacher."""
    steps, answer = solve(question)
    right = random.Random(f"solver/{seed}/{question}").random() < (1 - error_rate) ** len(steps)
    wrong = LETTERS[(LETTERS.index(answer) + 1) % 26]
    return f"Answer: {answer if right else wrong}"


def rows(n, seed, min_steps, max_steps):
    """n distinct questions as records in s1's five columns (prepare.py's pool), steps uniform in
    [min_steps, max_steps]. `answer` lets eval.py read the file as a benchmark, `domain` lets
    curate.py skip the classifier."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        steps = rng.randint(min_steps, max_steps)
        q = question(steps, rng)
        if q not in seen:
            seen.add(q)
            answer = solve(q)[1]
            out.append({"question": q, "solution": answer, "cot_type": "math",
                        "source_type": "mini/" + FAMILY,
                        "metadata": str({"family": FAMILY, "steps": steps}),
                        "answer": answer, "domain": FAMILY})
    if len(out) < n:
        raise SystemExit(f"--n {n}: only {len(out)} distinct questions "
                         f"with {min_steps}-{max_steps} steps")
    return out
