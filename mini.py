"""mini.py: the built-in miniature tasks of `make demo`, standing in for s1's 59K hard questions.

Four families of verifiable questions where a harder question needs more reasoning steps (adding up
numbers, counting a letter, finding the largest number, sorting digits), standing in for s1's
domains. Two programmatic models go with them:
  teacher  stands in for Gemini / DeepSeek-R1 (prepare.py distill --teacher mini): it reads only the
           question and writes a first pass, one short line per step. Most of its traces stop there;
           the others go on with "Wait" and a check that redoes the work another way (below), so a
           model trained on them usually ends its thinking unchecked, but knows how to check when
           budget forcing appends "Wait" (docs/s1.md §3.1);
  solver   stands in for Qwen2.5-7B/32B answering without a thinking phase (curate.py features
           --solvers mini): it keeps the running value in its head and slips unnoticed now and then,
           so it is right on short questions and wrong on long ones, which makes those "hard".
Everything is seeded by the question, so the same question always gets the same trace and answer.

The first pass reads the k-th operand of the question on its k-th line, so it must keep track of
where it is in the question; a small model's typical error is misreading an operand (a neighbour).
The check (check() below) finds the operands by value instead, so it copies no sequence and needs
no place in the question. In checked traces the first pass sometimes misreads an operand, and the
check's result, not the first pass's, is the answer: the check must be done, not copied.
"""
import random
import re

FAMILIES = ("sum", "count", "max", "sort")
CHECKED = 0.35  # share of traces that go on with "Wait" and a check (most stop unchecked)
WAIT = "Wait"   # what budget forcing appends after the model's own "\n" (sample.py), so a check line follows it


def question(family, steps, rng):
    if family == "sum":  # steps additions
        return "What is " + "+".join(str(rng.randint(1, 9)) for _ in range(steps + 1)) + "?"
    if family == "count":  # one step per letter read
        word = "".join(rng.choice("abc") for _ in range(steps))
        return f"How many {rng.choice('abc')} in {word}?"
    if family == "max":  # steps comparisons
        return "What is the largest of " + " ".join(str(rng.randint(10, 99)) for _ in range(steps + 1)) + "?"
    return "Sort the digits " + "".join(str(rng.randint(1, 9)) for _ in range(steps + 1)) + "."  # steps insertions


def parse(question):
    """(family, operands, the letter counted or None). ValueError if the question is not one of the family's."""
    if m := re.fullmatch(r"What is (\d+(?:\+\d+)+)\?", question):
        return "sum", [int(x) for x in m.group(1).split("+")], None
    if m := re.fullmatch(r"How many ([a-z]) in ([a-z]+)\?", question):
        return "count", list(m.group(2)), m.group(1)
    if m := re.fullmatch(r"What is the largest of (\d+(?: \d+)+)\?", question):
        return "max", [int(x) for x in m.group(1).split()], None
    if m := re.fullmatch(r"Sort the digits ([1-9]{2,})\.", question):
        return "sort", list(m.group(1)), None
    raise ValueError("not a question of the built-in family")


def steps_of(family, operands):
    return len(operands) if family == "count" else len(operands) - 1


def solution(family, operands, target):
    if family == "sum":
        return str(sum(operands))
    if family == "count":
        return str(operands.count(target))
    if family == "max":
        return str(max(operands))
    return "".join(sorted(operands))


def solve(question):
    """(family, steps, answer); ValueError if the question is not one of the family's."""
    family, operands, target = parse(question)
    return family, steps_of(family, operands), solution(family, operands, target)


def first_pass(family, operands, target):
    """One line per step; the k-th line reads the k-th operand from the question."""
    lines, value = [], operands[0]
    if family == "count":
        value = 0
        for ch in operands:
            value += ch == target
            lines.append(f"{ch} {value}")
        return lines
    for x in operands[1:]:
        if family == "sum":
            lines.append(f"{value}+{x}={value + x}")
            value += x
        elif family == "max":
            lines.append(f"max({value},{x})={max(value, x)}")
            value = max(value, x)
        else:  # insert the digit into the sorted prefix
            value = "".join(sorted(value + x))
            lines.append(value)
    return lines


def check(family, operands, target):
    """The answer re-derived by value, not by position: no line copies a sequence of operands, and
    none needs to know where it is in the question, only which values it holds (a small model finds
    a value in the question far more reliably than the k-th operand). The last line is the result.
      sum    the operands from the smallest value up, one addition per line ("2+2=4", "4+5=9", ...);
      count  one line per occurrence of the letter, counting up ("c 1", "c 2"; "c 0" if there is none);
      max    the tens digits from 9 down until one is in the question ("9 -", "8 -", "7 74 79"), then
             the largest number with that tens digit ("79");
      sort   the digits from the smallest value up, all copies of a value at once ("1111", "11114", ...)."""
    if family == "count":
        n = operands.count(target)
        return [f"{target} {i}" for i in range(1, n + 1)] or [f"{target} 0"]
    if family == "max":
        lines, tens = [], 9
        while not (found := [x for x in operands if x // 10 == tens]):
            lines.append(f"{tens} -")
            tens -= 1
        return lines + [f"{tens} " + " ".join(map(str, found)), str(max(found))]
    if family == "sort":
        values = sorted(set(operands))
        return ["".join(d for d in sorted(operands) if d <= v) for v in values]
    ordered, lines = sorted(operands), []
    value = ordered[0]
    for x in ordered[1:]:
        lines.append(f"{value}+{x}={value + x}")
        value += x
    return lines


def misread(operands, rng, slip_rate):
    """The operands as a careless first pass reads them: each one, with chance slip_rate, replaced by a
    neighbour in the question that differs from it (the model's typical error)."""
    read = list(operands)
    for i in range(len(operands)):
        neighbours = [operands[j] for j in (i - 1, i + 1) if 0 <= j < len(operands) and operands[j] != operands[i]]
        if neighbours and rng.random() < slip_rate:
            read[i] = rng.choice(neighbours)
    return read


def teacher(question, slip_rate, seed):
    """(thinking, answer) for a built-in question: a first pass, and in a CHECKED share of traces
    "Wait" and a check, whose first pass misreads each operand with chance slip_rate. Drawn from a
    generator seeded by the question, so the same question always gets the same trace."""
    family, operands, target = parse(question)
    rng = random.Random(f"{seed}/{question}")
    if rng.random() >= CHECKED:
        return "\n".join(first_pass(family, operands, target)), solution(family, operands, target)
    lines = first_pass(family, misread(operands, rng, slip_rate), target) + [WAIT] + check(family, operands, target)
    return "\n".join(lines), solution(family, operands, target)


SOLVER_ERROR_RATE = 0.25  # curation's stand-in for Qwen2.5-7B/32B: an unnoticed slip per step


def solver(question, error_rate, seed):
    """A stand-in for s1's difficulty solvers (Qwen2.5-7B/32B answering without a thinking phase) on
    the built-in tasks: it keeps the running value in its head, and every step has error_rate chance
    of a slip it never notices. So it is right on short questions and wrong on long ones; the reply
    is a plain chat answer. Seeded by the question, as the teacher."""
    _, steps, answer = solve(question)
    right = random.Random(f"solver/{seed}/{question}").random() < (1 - error_rate) ** steps
    return f"Answer: {answer if right else int(answer) + 1}"


def rows(n, seed, min_steps, max_steps):
    """n distinct questions in s1's five columns (prepare.py's pool rows), the families in turn, steps
    uniform in [min_steps, max_steps]. `answer` lets eval.py read the file as a benchmark, `domain`
    lets curate.py skip the classifier."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        family, steps = FAMILIES[len(out) % len(FAMILIES)], rng.randint(min_steps, max_steps)
        q = question(family, steps, rng)
        if q not in seen:
            seen.add(q)
            answer = solve(q)[2]
            out.append({"question": q, "solution": answer, "cot_type": "math", "source_type": "mini/" + family,
                        "metadata": str({"family": family, "steps": steps}), "answer": answer, "domain": family})
    if len(out) < n:
        raise SystemExit(f"--n {n}: only {len(out)} distinct questions with {min_steps}-{max_steps} steps")
    return out
