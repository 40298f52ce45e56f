"""mini.py: the built-in miniature tasks of `make demo`, standing in for s1's 59K hard questions.

Five families of verifiable questions where a harder question needs more reasoning steps (adding up
numbers, counting a letter, finding the largest number, sorting digits, and searching a list of
letters for the one after m), standing in for s1's domains. `make demo` uses the search
family alone (README, "Making Wait help"). Two programmatic models go with them:
  teacher  stands in for Gemini / DeepSeek-R1 (prepare.py distill --teacher mini): it reads only the
           question and writes one short line per step. In the first four families it sometimes
           slips and corrects itself after "Wait". In search it never slips, but it sometimes stops
           before it has found the answer and guesses, as a model that stops before it has checked:
           the premature stops are the teacher's, and forcing "Wait" is what resumes them;
  solver   stands in for Qwen2.5-7B/32B answering without a thinking phase (curate.py features
           --solvers mini): it keeps the running value in its head and slips unnoticed now and then,
           so it is right on short questions and wrong on long ones, which makes those "hard".
Everything is seeded by the question, so the same question always gets the same trace and answer.
"""
import random
import re

from machinery import chat

FAMILIES = ("sum", "count", "max", "sort", "search")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# search: the teacher checks the letters in order and, after every GIVE_UP_AFTER without a "yes",
# gives up and answers the last one it checked (a wrong guess), except that at GO_ON_RATE of those
# moments it writes "Wait" and goes on. After a "yes" it writes "Wait" and checks the letter again,
# and again, each time at RECHECK_RATE. The demo's s1K goes on at 36 % of its give-up moments (267
# of 734): under 50 %, so a model trained on it, decoding greedily, stops there; and 267 traces
# that go on teach it to resume after "Wait".
GIVE_UP_AFTER, GO_ON_RATE, RECHECK_RATE = 5, 0.35, 0.1
# One target: whether a letter comes after m is then a fixed property of the letter (n-z), which
# the model learns on every seed. With eight targets (m-t) it missed letters just after the target
# (r after p) on 7-9 % of questions, and which ones moved with the seed (README, s14-s16).
TARGET = "m"
# And after any other "no" it stops at STOP_RATE, guessing the same way; and before checking a letter
# it has just named ("mk" with no verdict yet) it stops at MIDLINE_STOP_RATE, answering the letter it
# checked last. Too rare to be where a model decoding greedily stops, they show that a search cut short,
# wherever a cap cuts it, is answered with the last letter checked. Without them some seeds answered a
# capped search with the letter after m read straight from the question (docs/demo.md).
STOP_RATE = 0.05
MIDLINE_STOP_RATE = 0.05
# The demo tokenizer's whole-word tokens (chat.build_byte_tokenizer): the chat template's words and the
# search question's, one token each, as a trained BPE has its frequent words. With bytes alone the
# prompt took ~160 of an example's ~240 tokens. None of them can occur inside a list of letters
# (each has a space, a capital, or two letters after m), so every letter of a list stays one token.
WORDS = ("system", "user", "assistant", "think", "answer", chat.SYSTEM, "Final Answer:", "Which of ", " is after ")


def question(family, steps, rng):
    if family == "sum":  # steps additions
        return "What is " + "+".join(str(rng.randint(1, 9)) for _ in range(steps + 1)) + "?"
    if family == "count":  # one step per letter read
        word = "".join(rng.choice("abc") for _ in range(steps))
        return f"How many {rng.choice('abc')} in {word}?"
    if family == "max":  # steps comparisons
        return "What is the largest of " + " ".join(str(rng.randint(10, 99)) for _ in range(steps + 1)) + "?"
    if family == "sort":  # steps insertions
        return "Sort the digits " + "".join(str(rng.randint(1, 9)) for _ in range(steps + 1)) + "."
    # search: steps + 1 distinct letters, exactly one of them after TARGET in the alphabet.
    # Letters, not numbers, written without spaces: each is one byte, so the next letter to check
    # is one look-up of the pair "last checked, next" in the question (with two-digit numbers, or
    # letters apart, the 0.8M model copied the wrong ones: README, "Making Wait help").
    until = LETTERS.index(TARGET) + 1
    letters = rng.sample(LETTERS[:until], steps)
    letters.insert(rng.randint(0, steps), rng.choice(LETTERS[until:]))
    return f"Which of {''.join(letters)} is after {TARGET}?"


def solve(question):
    """(family, steps, answer): each step is (what is written before the result, the result, a plausible
    wrong result or None). ValueError if the question is not one of the family's."""
    if m := re.fullmatch(r"What is (\d+(?:\+\d+)+)\?", question):
        nums, steps = [int(x) for x in m.group(1).split("+")], []
        for x in nums[1:]:
            steps.append((f"{nums[0]}+{x}=", nums[0] + x, nums[0] + x + 1))
            nums[0] += x
        return "sum", steps, nums[0]
    if m := re.fullmatch(r"How many ([a-z]) in ([a-z]+)\?", question):
        target, count, steps = m.group(1), 0, []
        for ch in m.group(2):
            count += ch == target
            steps.append((f"{ch} ", count, count + 1))
        return "count", steps, count
    if m := re.fullmatch(r"What is the largest of (\d+(?: \d+)+)\?", question):
        nums, steps = [int(x) for x in m.group(1).split()], []
        for x in nums[1:]:  # the slip keeps the smaller one
            steps.append((f"max({nums[0]},{x})=", max(nums[0], x), min(nums[0], x) if x != nums[0] else None))
            nums[0] = max(nums[0], x)
        return "max", steps, nums[0]
    if m := re.fullmatch(r"Sort the digits ([1-9]{2,})\.", question):
        done, steps = m.group(1)[0], []
        for d in m.group(1)[1:]:
            new = "".join(sorted(done + d))
            slip = done + d if done + d != new else None  # the slip forgets to move the new digit
            steps.append(("", new, slip))
            done = new
        return "sort", steps, int(done)
    if m := re.fullmatch(r"Which of ([a-z]{2,}) is after ([a-z])\?", question):
        letters, target = list(m.group(1)), m.group(2)
        after = [x for x in letters if x > target]
        if len(after) != 1:
            raise ValueError("not a question of the built-in family: not exactly one letter is after the target")
        # a line names the letter checked before it, then the next one: "ev no"
        before = [""] + letters
        return "search", [(f"{before[i]}{x} ", "yes" if x > target else "no", None) for i, x in enumerate(letters)], after[0]
    raise ValueError("not a question of the built-in family")


def teacher(question, slip_rate, seed):
    """(thinking, answer) for a built-in question. Slips are drawn from a generator seeded by the
    question, so the same question always gets the same trace. The answer is written "Final Answer: 7",
    the words a thinking cap forces (sample.py), so that a capped model answers in the form it learned
    (with "Answer: 7", a demo model went on after a forced "Final Answer: x" with a second answer of
    its own: README, "Making Wait help", s15)."""
    family, steps, answer = solve(question)
    rng, lines = random.Random(f"{seed}/{question}"), []
    if family == "search":
        thinking, answer = search_trace(steps, answer, rng)
    else:
        for before, result, wrong in steps:
            if wrong is not None and rng.random() < slip_rate:
                lines += [f"{before}{wrong}", f"Wait, {before}{result}"]
            else:
                lines.append(f"{before}{result}")
        thinking = "\n".join(lines)
    return thinking, f"Final Answer: {answer}"


def search_trace(steps, answer, rng):
    """One line per letter until the "yes", with the give-ups, go-ons and rechecks of GIVE_UP_AFTER's
    comment and the stops of STOP_RATE's. Every line is right: all the teacher gets wrong is that it
    sometimes stops too soon."""
    lines = []
    for i, (before, result, _) in enumerate(steps):
        if i > 0 and rng.random() < MIDLINE_STOP_RATE:  # named the next letter, stops before checking it
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
    """A stand-in for s1's difficulty solvers (Qwen2.5-7B/32B answering without a thinking phase) on
    the built-in tasks: it keeps the running value in its head, and every step has error_rate chance
    of a slip it never notices. So it is right on short questions and wrong on long ones; the reply
    is a plain chat answer. Seeded by the question, as the teacher."""
    _, steps, answer = solve(question)
    right = random.Random(f"solver/{seed}/{question}").random() < (1 - error_rate) ** len(steps)
    wrong = answer + 1 if isinstance(answer, int) else LETTERS[(LETTERS.index(answer) + 1) % 26]
    return f"Answer: {answer if right else wrong}"


def rows(n, seed, min_steps, max_steps, families=FAMILIES):
    """n distinct questions in s1's five columns (prepare.py's pool rows), the families in turn, steps
    uniform in [min_steps, max_steps]. `answer` lets eval.py read the file as a benchmark, `domain`
    lets curate.py skip the classifier."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        family, steps = families[len(out) % len(families)], rng.randint(min_steps, max_steps)
        q = question(family, steps, rng)
        if q not in seen:
            seen.add(q)
            answer = str(solve(q)[2])
            out.append({"question": q, "solution": answer, "cot_type": "math", "source_type": "mini/" + family,
                        "metadata": str({"family": family, "steps": steps}), "answer": answer, "domain": family})
    if len(out) < n:
        raise SystemExit(f"--n {n}: only {len(out)} distinct questions with {min_steps}-{max_steps} steps")
    return out
