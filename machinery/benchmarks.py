"""benchmarks.py: the benchmarks s1 evaluates on, loaded from local copies or the hub, and graded
offline.

Prompts are s1's: the question as is, and for GPQA the question followed by
"\\n\\nA) ..\\nB) ..\\nC) ..\\nD) .." (s1 eval/lm-evaluation-harness/lm_eval/tasks/gpqa/openai/
utils.py l. 12), the options in a fixed shuffled order: Python's random.shuffle over [wrong 1,
wrong 2, wrong 3, right], seeded with eval.py's --gpqa-seed (default 0), record by record in file
order. That is s1's procedure, but not necessarily s1's order, which cannot be recovered offline
(see load_benchmark).

Grading (s1's lm_eval/tasks/{aime,openai_math,gpqa/openai}/utils.py, with math-verify in place of
gpt-4o-mini, which s1 paid for): read the text after the last "<|im_start|>answer", take the last
\\boxed{}, else what follows the last "Answer:", else the whole answer; then integers are compared
as integers (AIME), everything else with math-verify (gold first), and GPQA with our own letter
extractor, where "no answer" is its own outcome (s1 silently answered "A"). math-verify times out
with signal.alarm, so grade() runs in the main thread (or in worker processes), never in threads.
eval.py grades its samples with it, curate.py the solvers' and the teacher's answers, prepare.py
decontaminates against the questions.
"""
import itertools
import os
import random
import re
import threading

from machinery import chat, jsonl


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: machinery/..
# name: (hub dataset s1 uses, its config, split, local default). GPQA's local default is the gzip
# copy beside the repo: GPQA asks that its questions never appear in plain text online, so none is
# shipped.
BENCHMARKS = {
    "aime24": ("simplescaling/aime24_nofigures", None, "train",
               os.path.join(ROOT, "data/eval/aime24_nofigures.jsonl")),
    "aime25": ("TIGER-Lab/AIME25", None, "train",
               os.path.join(ROOT, "data/eval/aime25_nofigures.jsonl")),
    "math500": ("simplescaling/openaimath", None, "test",
                os.path.join(ROOT, "data/eval/math500.jsonl")),
    "gpqa": ("Idavidrein/gpqa", "gpqa_diamond", "train",  # yours, never committed (.gitignore)
             os.path.join(ROOT, "data", "eval", "gpqa_diamond.jsonl.gz")),
}


# ----------------------------------------------------------------------------------------------
# Data: local files or the hub -> [{id, prompt, gold, choices}]

def field(record, names, source, i):
    for name in names:
        if record.get(name) not in (None, ""):
            return record[name]
    raise SystemExit(f"{source} record {i}: no {names[0]!r} "
                     f"(looked for {names}; the record has {sorted(record)})")


def load_benchmark(name, source=None, limit=0, gpqa_seed=0):
    """The questions of a benchmark, each {id, prompt, gold, choices}. Column names of the hub
    datasets and of the local copies are both accepted.

    GPQA's options: s1's process_docs shuffles [wrong 1, wrong 2, wrong 3, right] with the global
    random.shuffle, record by record (s1 eval/lm-evaluation-harness/lm_eval/tasks/gpqa/openai/
    utils.py l. 221-242); we do the same with random.Random(gpqa_seed). s1's own order is unknown:
    lm-eval seeds random with 0 (evaluator.py l. 147-150) but builds the vLLM model (l. 201)
    before the tasks (l. 232), and vLLM's worker re-seeds random with the model's seed, 1234 by
    default (vllm_causallms.py l. 58; vLLM 0.6.4's set_random_seed). Moreover process_docs ends in
    dataset.map, which the datasets library caches on disk under a hash of the function, so later
    runs reuse the order of the first run on that machine: seed 0's after the dummy-model test of
    commands.sh l. 6, seed 1234's after a first vLLM run (if nothing else drew from random in
    between). s1's released samples (README l. 233) record each question's letter and would
    settle it. Our file is in the official CSV's order, assumed to be the hub dataset's."""
    # a benchmark of one's own (not in BENCHMARKS) comes with its source
    hub, config, split, local = BENCHMARKS.get(name, (None, None, "train", None))
    source = source or (local if os.path.exists(local) else hub)
    records = jsonl.local_or_hub(source, config if source == hub else None, split,
                                 hint="--data NAME=PATH points at a local copy")
    rng = random.Random(gpqa_seed)
    questions = []
    for i, record in enumerate(records):
        ids = [record[k] for k in ("unique_id", "id", "Record ID", "ID")
               if record.get(k) not in (None, "")]
        qid = str(ids[0]) if ids else str(i)
        text = field(record, ["problem", "question", "Question", "Problem"], source, i)
        if name == "gpqa":
            correct = field(record, ["correct_answer", "Correct Answer"], source, i)
            wrong = (record.get("incorrect_answers")
                     or [field(record, [f"Incorrect Answer {k}"], source, i) for k in (1, 2, 3)])
            # before the shuffle: the three wrong ones, then the right one (as s1)
            choices = [*wrong, correct]
            rng.shuffle(choices)
            gold = "ABCD"[choices.index(correct)]
            text = f"{text}\n\n" + "\n".join(f"{letter}) {c}" for letter, c in zip("ABCD", choices))
        else:
            choices, gold = None, str(field(record, ["answer", "Answer"], source, i)).strip()
            gold = str(int(gold)) if gold.isdigit() else gold  # AIME "025" -> "25"
        questions.append({"id": qid, "prompt": text, "gold": gold, "choices": choices})
    if len({q["id"] for q in questions}) != len(questions):
        raise SystemExit(f"{source}: question ids are not unique")
    return questions[:limit] if limit else questions


# ----------------------------------------------------------------------------------------------
# Grading (the rule in the docstring above)

ANSWER_HEADER = chat.ANSWER + "\n"


def answer_section(text):
    """s1's rule: the text after the last "<|im_start|>answer\\n"; failing that, after the last
    <|im_start|> without its first line (a header the model wrote itself); else all of it."""
    if ANSWER_HEADER in text:
        text = text.split(ANSWER_HEADER)[-1]
    elif chat.IM_START in text:
        text = text.split(chat.IM_START)[-1]
        text = text.split("\n", 1)[1] if "\n" in text else text
    return text.split(chat.IM_END)[0].replace("<|endoftext|>", "")


def last_boxed(text):
    """The content of the last \\boxed{...} or \\fbox{...} (braces matched), or "\\boxed 5" up to
    a $; None if there is none or the last one is never closed."""
    starts = list(re.finditer(r"\\(?:boxed|fbox)(?=[{ ])", text))
    if not starts:
        return None
    rest = text[starts[-1].end():]
    if rest.startswith(" "):
        return rest[1:].split("$")[0].strip()
    depth = 0
    for k, c in enumerate(rest):
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return rest[1:k]
    return None


def extract_answer(text):
    """(answer, where): the last \\boxed{} of the answer section, else what follows its last
    "Answer:" (s1 used findall with a greedy DOTALL pattern, which in fact took the first), else
    the whole section. None when the section is empty."""
    section = answer_section(text)
    boxed = last_boxed(section)
    if boxed is not None:
        return boxed.strip(), "boxed"
    matches = list(re.finditer(r"(?i)answer\s*:", section))
    if matches:
        return section[matches[-1].end():].strip() or None, "answer"
    return section.strip() or None, "text"


def parse_prediction(answer, where):
    """math-verify's parse of an extracted answer: a box's content is re-boxed so that its LaTeX is
    read whole; free text is searched as is, and a single bare word (e.g. "Evelyn") is re-boxed, as
    a sentence would be read as a product of single-letter symbols."""
    # imported where grading runs: prepare.py needs only the tables and loaders
    from math_verify import parse
    if where == "boxed":
        return parse(f"\\boxed{{{answer}}}", raise_on_error=True)
    parsed = parse(answer, raise_on_error=True)
    if not parsed and not re.search(r"\s", answer):
        parsed = parse(f"\\boxed{{{answer}}}", raise_on_error=True)
    return parsed


GOLD_CACHE = {}  # gold -> parsed: a sweep grades every question once per setting
INTEGER = re.compile(r"[\s*$]*(\d+)[\s*$.]*")


def as_integer(answer, where):
    """The answer as an int when it is just an integer (a box's content, or the first line of what
    follows "Answer:"), else None."""
    m = INTEGER.fullmatch(answer if where == "boxed" else answer.split("\n")[0])
    return int(m.group(1)) if m else None


def verify_pairs(gold, pred):
    """math-verify's verify, one pair of parses at a time, so that a comparison that raises or times
    out neither hides another that succeeds nor passes silently as a wrong answer."""
    from math_verify import verify
    from math_verify.errors import TimeoutException
    errors = []
    for g, t in itertools.product(gold, pred):
        try:
            if verify(g, t, raise_on_error=True):
                return True, "ok"
        except (Exception, TimeoutException) as e:
            errors.append(f"error: {type(e).__name__}")
    return False, errors[0] if errors else "ok"


def math_equal(gold, answer, where):
    """(correct, status): status "ok", "unparsed" (math-verify found nothing to compare), "gold
    unparsed", or "error: ..." (a timeout or an exception): counted, never swallowed."""
    if gold.isdigit() and (n := as_integer(answer, where)) is not None:
        return n == int(gold), "ok"  # AIME (and MATH's integer answers): leading zeros don't count
    from math_verify import parse
    from math_verify.errors import TimeoutException
    try:
        gold_parsed = (GOLD_CACHE.get(gold)
                       or GOLD_CACHE.setdefault(gold, parse(f"${gold}$", raise_on_error=True)))
        pred = parse_prediction(answer, where)
    except (Exception, TimeoutException) as e:
        return False, f"error: {type(e).__name__}"
    if not gold_parsed:
        return False, "gold unparsed"
    return verify_pairs(gold_parsed, pred) if pred else (False, "unparsed")


LETTER_PATTERNS = [  # tried in order; the last match of the first pattern that matches wins
    # "The answer is B", "**Answer:** (C)"
    r"(?i:answer)(?:\s*(?i:is))?[\s*:\-]*(?i:option\s*)?\(?([A-D])\b",
    r"(?i:option|choice)\s*\(?([A-D])\b",
    r"\(([A-D])\)",                                                       # "(B)"
    r"\b([A-D])\)",                                                       # "B)"
    r"^\W*([A-D])\W*$",                                                   # the answer is one letter
]


def as_letter(answer, choices):
    """A letter from a box's or an "Answer:" line's content: "B", "(b)", "\\text{B}", "B) 10 eV",
    or the exact text of one of the options."""
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}", r"\1", answer).strip(" \t\n*$.:")
    m = re.fullmatch(r"\(?([A-Da-d])\)?", s) or re.match(r"\(?([A-D])[).:]\s", s)
    if m:
        return m.group(1).upper()
    norm = lambda x: re.sub(r"[\s$]", "", x).lower()
    hits = [letter for letter, c in zip("ABCD", choices or []) if norm(c) == norm(s)]
    return hits[0] if len(hits) == 1 else None


def extract_letter(text, choices=None):
    """GPQA: the chosen letter, or None when the answer names none (never a default)."""
    section = answer_section(text)
    answer, where = extract_answer(text)
    if answer is not None and where != "text":
        if letter := as_letter(answer.split("\n")[0], choices):
            return letter
    for pattern in LETTER_PATTERNS:
        found = re.findall(pattern, section.strip(), flags=re.MULTILINE)
        if found:
            return found[-1]
    return None


def grade(benchmark, question, text):
    """{extracted, extracted_from, correct, status} for one generated text."""
    # in a thread every answer would be an "error"
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("grade() uses math-verify's signal.alarm: "
                           "call it from the main thread or a process pool")
    if benchmark == "gpqa":
        letter = extract_letter(text, question["choices"])
        return {"extracted": letter, "extracted_from": "letter",
                "correct": letter == question["gold"], "status": "ok" if letter else "no answer"}
    answer, where = extract_answer(text)
    if answer is None:
        return {"extracted": None, "extracted_from": None, "correct": False, "status": "no answer"}
    correct, status = math_equal(question["gold"], answer, where)
    return {"extracted": answer, "extracted_from": where, "correct": correct, "status": status}
