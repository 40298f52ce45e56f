"""sources.py: s1's 16 question sources (docs/s1.md §1.1), as prepare.py collect reads them.

Each entry of SOURCES: the hub dataset, the parts loaded (config, split, data_files), which records
to keep, the mapping to s1's five columns (question, solution, cot_type, source_type, metadata),
and an optional pick over the whole source. Field names and picks follow s1's
data/collect_data.py, add_aime.py and fix_gpqa.py; the line each rule comes from is cited where it
is applied.
"""
import ast
import json
import math
import os
import random
from functools import cache

import numpy as np

from machinery import benchmarks, jsonl


def record(question, solution, cot_type, source_type, raw, used):
    """s1's five columns; metadata is str() of the remaining original fields (ast.literal_eval
    reads it)."""
    return {"question": question, "solution": solution, "cot_type": cot_type,
            "source_type": source_type,
            "metadata": str({k: v for k, v in raw.items() if k not in used})}


# ----------------------------------------------------------------------------------------------
# The 16 sources (docs/s1.md §1.1; field names from s1's collect_data.py and add_aime.py). Each:
# hub dataset, the parts loaded (config, split, data_files), which records to keep, the mapping to
# the five columns, and an optional pick over the whole source. to_record and keep get
# (record, part).

def part(config=None, split="train", data_files=None):
    return {"config": config, "split": split, "data_files": data_files}


OLYMPIC_ARENA = ["Math", "Physics", "Chemistry", "Biology", "Geography", "Astronomy", "CS"]
OLYMPIADBENCH = ["OE_TO_maths_en_COMP", "OE_TO_physics_en_COMP", "TP_TO_maths_en_COMP",
                 "TP_TO_physics_en_COMP"]
AGIEVAL = {"sat_en": "english", "sat_math": "math", "lsat_ar": "english", "lsat_lr": "english",
           "lsat_rc": "english", "logiqa": "math", "aqua_rat": "math", "math_agieval": "math"}
LIVECODEBENCH = {"test.jsonl": "release_v1", "test2.jsonl": "release_v2",  # what each file adds
                 "test3.jsonl": "release_v3"}
SCIEVAL_COT = {"SocraticQA": "science", "reagent selection": "science", "MedQA": "health science",
               "PubMedQA": "health science"}
# s1's picks (collect_data.py l. 420, 432), made after decontamination (l. 459-474)
SCIEVAL_PICK, XWORD_PICK = 250, 1000
XWORD = ("Solve the crossword puzzle. You are presented with a clue as input and the number of "
         "letters in brackets.")
GPQA_TEMPLATE = "{}\nAnswer Choices:\n(A) {}\n(B) {}\n(C) {}\n(D) {}"  # s1's fix_gpqa.py


def hub_records(hub, config=None, split="train", data_files=None,
                hint="give a local copy with --local NAME=PATH"):
    """Records of a hub dataset; offline (HF_HUB_OFFLINE=1) the datasets library reads its own
    cache."""
    import datasets
    try:
        return list(datasets.load_dataset(hub, config, split=split, data_files=data_files))
    except Exception as e:
        raise SystemExit(f"{hub} ({config or 'default'}, {split}): cannot load ({one_line(e)}); "
                         f"offline and not cached? {hint}")


def one_line(e):
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


@cache
def numina_500():  # s1 kept all aops_forum records and, of the rest, the 500 problems of this list
    return {r["problem"] for r in hub_records("simplescaling/numinamath_500")}


KEEP_LIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "s1",
                         "tmp_questions_to_keep.json")


@cache
def kept_by_s1():
    """s1's TMP_QUESTIONS_TO_KEEP (data/collect_data.py l. 18-102; 64 distinct questions, shipped
    in data/s1/): questions s1 kept past its filters. NuminaMath keeps listed non-aops records
    (l. 139), SciEval's 250 and XWord's 1,000 add the listed records to what they pick
    (l. 357-358, 382; l. 471-474)."""
    with open(KEEP_LIST, encoding="utf-8") as f:
        return frozenset(json.load(f)["questions"])


@cache
def gpqa_diamond():  # GPQA's extended set contains Diamond: those are test questions
    local = benchmarks.BENCHMARKS["gpqa"][3]
    if os.path.exists(local):
        records = jsonl.read_records(local)
    else:
        records = hub_records("Idavidrein/gpqa", "gpqa_diamond")
    return {(r.get("question") or r.get("Question")).strip() for r in records}


def scieval_record(r, p):
    q = (r["question"].split("\n\nAnswer:")[0]
         .replace("\nOptimal solvent:", "\nWhat is the optimal solvent?")
         .replace("\nOptimal ligand:", "\nWhat is the optimal ligand?")
         .replace("\nOptimal reactant:", "\nWhat is the optimal reactant?"))
    return record(q, r["answer"][0], SCIEVAL_COT[r["task_name"]],
                  f"OpenDFM/SciEval/{r['category']}/{r['type']}/{r['task_name']}", r,
                  ("question", "answer"))


def balance_scieval(records, n=SCIEVAL_PICK):
    """s1's SciEval selection: the records on s1's keep list, and n less their number spread evenly
    over the tasks, SocraticQA's share evenly over its topics, walking a seeded shuffle of the
    other records (s1's walk may take a listed record again: a duplicate, dropped later)."""
    listed = [r for r in records if r["question"] in kept_by_s1()]
    records = [r for r in records if r["question"] not in kept_by_s1()]
    n -= len(listed)
    random.Random(42).shuffle(records)
    meta = [ast.literal_eval(r["metadata"]) for r in records]
    tasks = {m["task_name"] for m in meta}
    per_task = {t: math.ceil(n / len(tasks)) for t in tasks}
    topics = {m.get("topic") for m in meta if m["task_name"] == "SocraticQA"}
    per_topic = {t: math.ceil(per_task.get("SocraticQA", 0) / len(topics)) for t in topics}
    kept = []
    for r, m in zip(records, meta):
        task, topic = m["task_name"], m.get("topic")
        if per_task[task] > 0 and (task != "SocraticQA" or per_topic[topic] > 0):
            kept.append(r)
            per_task[task] -= 1
            per_topic[topic] = per_topic.get(topic, 0) - (task == "SocraticQA")
        if len(kept) >= n:
            break
    return kept + listed  # as s1: concatenate_datasets([selected, samples_to_keep]) (l. 382)


def agieval_record(r, p):
    c = p["config"]
    if c in ("aqua_rat", "math_agieval"):
        q = r["question"]
    else:  # as s1: (passage + "\n\n").strip() + question, so the strip also eats the separator
        q = (((r.get("passage") or "") + "\n\n").strip() + r["question"] + "\n"
             + "\n".join(r["options"]))
    return record(q, r["solution"], AGIEVAL[c], "baber/agieval/" + c, r,
                  ("passage", "question", "options", "solution"))


def fix_gpqa(records):
    """s1's fix_gpqa.py, run over the collected pool: options shuffled into the question, and the
    letter appended to the explanation. One random.seed(42) sequence is drawn record by record
    (l. 7, 24), so each record's permutation depends on the GPQA records before it: their order
    decides the options."""
    rng = random.Random(42)
    for r in records:
        m = ast.literal_eval(r["metadata"])
        right = m["Correct Answer"].strip("\n")
        choices = [m[f"Incorrect Answer {k}"].strip("\n") for k in (1, 2, 3)] + [right]
        rng.shuffle(choices)
        r["question"] = GPQA_TEMPLATE.format(r["question"], *choices)
        r["solution"] = f"{r['solution']}\n\nAnswer: {'ABCD'[choices.index(right)]}"
    return records


def take_shuffled(n):
    """s1's XWord pick (data/collect_data.py l. 469-474): ds.shuffle(seed=42), then the first n
    less the records on s1's keep list, then those records (a listed record among the first ones
    comes twice; the duplicate goes later, as in s1). The datasets library shuffles with numpy's
    default_rng(seed).permutation, so the same records in the same order give s1's pick."""
    def pick(records):
        shuffled = [records[i] for i in np.random.default_rng(42).permutation(len(records))]
        listed = [r for r in shuffled if r["question"] in kept_by_s1()]
        return shuffled[:max(n - len(listed), 0)] + listed
    return pick


SOURCES = [
    # train: the 12K that are not MATH500
    dict(name="math", hub="simplescaling/openaimath", parts=[part()],
         to_record=lambda r, p: record(r["problem"], r["solution"], "math",
                                       "simplescaling/openaimath/" + r["subject"], r,
                                       ("problem", "solution"))),
    dict(name="olympicarena", hub="GAIR/OlympicArena",
         parts=[part(s, split) for split in ("test", "val") for s in OLYMPIC_ARENA],
         keep=lambda r, p: r["language"] == "EN" and r["modality"] == "text-only",
         to_record=lambda r, p: record(r["problem"], r["solution"],
                                       {"Math": "math", "CS": "coding"}.get(r["subject"],
                                                                           "science"),
                                       "GAIR/OlympicArena/" + r["subject"], r,
                                       ("problem", "solution"))),
    dict(name="theoremqa", hub="TIGER-Lab/TheoremQA", parts=[part(split="test")],
         keep=lambda r, p: r["Picture"] is None,
         to_record=lambda r, p: record(r["Question"], str(r["Answer"]), "math",
                                       "TIGER-Lab/TheoremQA/" + r["Answer_type"], r,
                                       ("Question", "Answer"))),
    dict(name="numinamath", hub="AI-MO/NuminaMath-CoT", parts=[part()],
         keep=lambda r, p: (r["source"] == "aops_forum" or r["problem"] in kept_by_s1()
                            or r["problem"] in numina_500()),
         to_record=lambda r, p: record(r["problem"], r["solution"], "math",
                                       "AI-MO/NuminaMath-CoT/" + r["source"], r,
                                       ("problem", "solution", "messages"))),
    dict(name="omnimath", hub="KbsdJames/Omni-MATH", parts=[part(split="test")],
         to_record=lambda r, p: record(r["problem"], r["solution"], "math", "KbsdJames/Omni-MATH",
                                       r, ("problem", "solution"))),
    dict(name="scieval", hub="OpenDFM/SciEval",
         parts=[part(split="test"), part(split="validation")],
         keep=lambda r, p: r["answer"] is not None, to_record=scieval_record, pick=balance_scieval),
    dict(name="olympiadbench", hub="Hothan/OlympiadBench", parts=[part(c) for c in OLYMPIADBENCH],
         to_record=lambda r, p: record(r["question"], r["solution"][0], "math",
                                       f"Hothan/OlympiadBench/{r['question_type']}/{r['subject']}",
                                       r, ("question", "solution"))),
    dict(name="jeebench", hub="daman1209arora/jeebench", parts=[part(split="test")],
         to_record=lambda r, p: record(r["question"], r["gold"],
                                       {"chem": "science"}.get(r["subject"], "math"),
                                       "daman1209arora/jeebench/" + r["subject"], r,
                                       ("question", "gold"))),
    dict(name="agieval", hub="baber/agieval",
         parts=[part(c, s) for c in AGIEVAL for s in ("test", "few_shot")],
         keep=lambda r, p: p["config"] != "math_agieval" or r["level"] == 5,  # level 5 only
         to_record=agieval_record),
    dict(name="statsqual", hub="simplescaling/s1-prob", parts=[part()],
         to_record=lambda r, p: record(r["question"], r["solution"], "math",
                                       "simplescaling/s1-prob", r, ("question", "solution"))),
    dict(name="gpqa", hub="Idavidrein/gpqa", parts=[part("gpqa_extended")],
         keep=lambda r, p: r["Question"].strip() not in gpqa_diamond(),
         to_record=lambda r, p: record(r["Question"], r["Explanation"], "science",
                                       "Idavidrein/gpqa", r, ("Question", "Explanation")),
         pick=fix_gpqa),
    dict(name="xword", hub="0xharib/xword1", parts=[part()], pick=take_shuffled(XWORD_PICK),
         to_record=lambda r, p: record(XWORD + "\n\n" + r["input"].split("### Clue: ")[1],
                                       r["output"], "crossword", "0xharib/xword1", r,
                                       ("input", "output"))),
    dict(name="usaco", hub="codegenning/usacobench_formatted", parts=[part(split="test")],
         to_record=lambda r, p: record(r["question"].strip(), None, "coding",
                                       "codegenning/usacobench_formatted", r, ("question",))),
    dict(name="quant", hub="simplescaling/s1-teasers", parts=[part()],
         to_record=lambda r, p: record(r["Question"].strip(), r["Answer"], "math",
                                       "simplescaling/s1-teasers", r, ("Question", "Answer"))),
    dict(name="livecodebench", hub="livecodebench/code_generation_lite",
         parts=[part(data_files=f) for f in LIVECODEBENCH],
         keep=lambda r, p: r["difficulty"] == "hard",
         to_record=lambda r, p: record(r["question_content"].strip(), None, "coding",
                                       "LiveCodeBench/" + LIVECODEBENCH[p["data_files"]], r,
                                       ("question_content",))),
    dict(name="aime", hub="qq8933/AIME_1983_2024", parts=[part()],
         keep=lambda r, p: int(r["ID"].split("-")[0]) <= 2022,
         to_record=lambda r, p: record(r["Question"], str(r["Answer"]), "math",
                                       "qq8933/AIME_1983_2024", r, ("Question", "Answer"))),
]
S1_SOURCES = [s["name"] for s in SOURCES]


def generic_record(r, name, path, i):
    """A record of a local file for a source of one's own: question, and solution (or answer)."""
    question = next((r[k] for k in ("question", "problem", "Question", "Problem")
                     if isinstance(r.get(k), str)), None)
    if not question or not question.strip():
        raise SystemExit(f"{path} record {i}: no question (looked for question, problem; "
                         f"the record has {sorted(r)})")
    solution = next((str(r[k]) for k in ("solution", "answer", "Answer", "gold")
                     if r.get(k) is not None), None)
    # already in s1's five columns (e.g. an earlier pool): as is
    if "cot_type" in r and "source_type" in r:
        return dict(r, question=question, solution=solution, metadata=r.get("metadata", "{}"))
    return record(question, solution, "math", name, r,
                  ("question", "problem", "Question", "Problem", "solution"))
