"""eval.py: the grader against official answers and published numbers, GPQA's letters, the metrics,
and whole runs (a stand-in decoder in process, then the real sample.py with a tiny model)."""
import gzip
import itertools
import json
import os
import random
import re
import sys
import types

import pytest
import torch
from conftest import ROOT, run, tiny_hf_model

import chat
import eval as E
import hf_checkpoint

GPQA_GZ = E.BENCHMARKS["gpqa"][3]
needs_gpqa = pytest.mark.skipif(not os.path.exists(GPQA_GZ), reason=f"GPQA is not committed; {GPQA_GZ} is absent")


def rows(name):
    with open(os.path.join(ROOT, "data", "eval", name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def respond(answer, thinking="Let me think. 1+1 = 2, \\boxed{999} is a guess."):
    """A generated text as sample.py returns it: thinking, the answer header, the answer, <|im_end|>."""
    return f"\n{thinking}\n{chat.ANSWER}\n{answer}{chat.IM_END}"


# ----------------------------------------------------------------------------------------------
# Grading against independent oracles

def test_math500_official_solutions_grade_correct_against_official_answers():
    from math_verify import parse, verify
    questions, data = E.load_benchmark("math500"), rows("math500.jsonl")
    assert len(questions) == 500 and [q["id"] for q in questions] == [r["unique_id"] for r in data]
    graded = [E.grade("math500", q, r["solution"]) for q, r in zip(questions, data)]
    wrong = [(q["id"], g) for q, g in zip(questions, graded) if not g["correct"]]
    assert len(wrong) <= 1, wrong
    assert all(g["extracted_from"] == "boxed" for g in graded)
    # plain math-verify on the same pairs (gold in $...$, the solution as is) also gets all 500
    assert sum(verify(parse(f"${r['answer']}$"), parse(r["solution"])) for r in data) == 500
    # and the grader can fail: each solution against the next problem's answer is (nearly) always wrong
    shifted = [E.grade("math500", q, r["solution"]) for q, r in zip(questions, data[1:] + data[:1])]
    assert sum(g["correct"] for g in shifted) <= 5


@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_every_aime_answer_matches_itself_in_every_format(name):
    questions = E.load_benchmark(name)
    assert len(questions) == 30 and all(q["gold"].isdigit() and str(int(q["gold"])) == q["gold"] for q in questions)
    for q in questions:
        n = int(q["gold"])
        for form in (f"{n}", f"{n:03d}", f"\\boxed{{{n}}}", f"Answer: {n}", f"Final Answer: $\\boxed{{{n:03d}}}$"):
            for text in (form, respond(form)):
                g = E.grade(name, q, text)
                assert g["correct"] and g["status"] == "ok", (q["id"], text, g)
            assert not E.grade(name, q, respond(form.replace(str(n), str(n + 1)) if n else "1"))["correct"]
    # the zero-padded gold of the AIME24 file and the integer gold of AIME25 both become plain integers
    assert rows("aime24_nofigures.jsonl")[0]["answer"] == "204" and E.load_benchmark("aime24")[0]["gold"] == "204"


TRICKY = [  # (gold, the model's answer, verdict)
    ("\\frac{1}{2}", "\\boxed{0.5}", True),
    ("0.75", "so the answer is \\boxed{\\frac{3}{4}}.", True),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", False),
    ("[1, 3)", "\\boxed{[1,3)}", True),
    ("[1, 3)", "\\boxed{(1,3)}", False),
    ("\\{1, 2, 3\\}", "\\boxed{\\{3, 2, 1\\}}", True),
    ("3", "\\boxed{x = 3}", True),
    ("x=3", "\\boxed{3}", True),
    ("30^\\circ", "\\boxed{30}", True),
    ("30^{\\circ}", "\\boxed{30^\\circ}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt2/2}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt{3}/2}", False),
    ("2\\pi", "\\boxed{6.283185}", True),
    ("1000", "\\boxed{1,000}", True),
    ("10", "\\boxed{10\\text{ cm}}", True),
    ("(1, 2)", "\\boxed{(2, 1)}", False),
    ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", True),
    ("\\text{Evelyn}", "Answer: Evelyn", True),
    ("\\text{Evelyn}", "\\boxed{\\text{Bob}}", False),
    ("\\text{(C)}", "\\boxed{C}", True),
    ("\\text{even}", "\\boxed{\\text{odd}}", False),
    ("\\frac{3}{4}", "Answer: 3/4", True),
    ("\\frac{3}{4}", "Answer: $\\frac{3}{4}$", True),
    ("7", "The final answer is 7.", True),
    ("7", "\\boxed{7} first, but after checking: \\boxed{8}", False),  # the last box counts
]


@pytest.mark.parametrize("gold,answer,expected", TRICKY)
def test_tricky_pairs(gold, answer, expected):
    g = E.grade("math500", {"gold": gold}, respond(answer))
    assert g["correct"] is expected and g["status"] == "ok", g


def test_failures_are_outcomes_of_their_own():
    q = {"gold": "\\frac{1}{2}"}
    assert E.grade("math500", q, respond(""))["status"] == "no answer"
    assert E.grade("math500", q, respond("I could not solve it"))["status"] == "unparsed"
    # an unclosed box falls back to "Answer:" as s1 does; the thinking's \boxed{999} is never read
    assert E.extract_answer(respond("Answer: 5 \\boxed{5")) == ("5 \\boxed{5", "answer")
    assert E.extract_answer("no header at all \\boxed{12}") == ("12", "boxed")
    assert E.extract_answer(f"\n<|im_start|>assistant\nAnswer: 3{chat.IM_END}") == ("3", "answer")


def test_the_last_answer_counts_not_the_first():
    """The README's grading rule: what follows the LAST "Answer:". s1's pattern (gpqa/openai/utils.py
    l. 34, l. 189-190: findall with a greedy DOTALL (.*), then matches[-1]) takes the first, since
    the greedy match swallows the rest of the text and so is the only match."""
    text = respond("Answer: 3\nHmm, let me check that again. 2 + 3 = 5.\nAnswer: 5")
    assert E.extract_answer(text) == ("5", "answer")
    assert E.grade("math500", {"gold": "5"}, text)["correct"] and not E.grade("math500", {"gold": "3"}, text)["correct"]
    s1 = re.findall(r"(?i)Answer\s*:\s*(.*)", E.answer_section(text), re.DOTALL)
    assert len(s1) == 1 and s1[-1].startswith("3\n")  # s1's "last" match is everything after the first
    gpqa = respond("Answer: A\nWait, A ignores the spin.\nAnswer: C")
    assert E.extract_letter(gpqa, ["w", "x", "y", "z"]) == "C"


def test_grading_refuses_threads():
    """math-verify times out with signal.alarm, which only the main thread may set: in a thread every
    answer would come back as an error, so grade() says so instead."""
    import threading
    caught = []
    worker = threading.Thread(target=lambda: caught.append(pytest.raises(RuntimeError, E.grade, "math500", {"gold": "1"}, "1")))
    worker.start(), worker.join()
    assert caught and "main thread" in str(caught[0].value)


GPQA_CASES = [
    ("(B)", "B"), ("B)", "B"), ("The answer is B", "B"), ("\\boxed{B}", "B"), ("\\boxed{\\text{D}}", "D"),
    ("**Answer:** (C)", "C"), ("Answer: b", "B"), ("Final Answer: A) 10^-9 eV", "A"), ("\\boxed{10^-8 eV}", "D"),
    ("The lines must be resolved, so the energy difference has to exceed the width.", None),
    ("", None),
]


@pytest.mark.parametrize("answer,letter", GPQA_CASES)
def test_gpqa_letter_extraction(answer, letter):
    choices = ["10^-9 eV", "10^-11 eV", "10^-4 eV", "10^-8 eV"]
    text = respond(answer, thinking="Option (A) looks tempting. Wait, (C)?")  # the thinking is never read
    assert E.extract_letter(text, choices) == letter
    g = E.grade("gpqa", {"gold": "A", "choices": choices}, text)
    assert g["status"] == ("ok" if letter else "no answer")
    assert g["correct"] is (letter == "A")  # "no answer" never counts as A, unlike s1's default


def harness_gold_letters(rows, seed):
    """s1's process_docs, re-run independently: the global random seeded, then random.shuffle over
    [Incorrect Answer 1, 2, 3, Correct Answer] row by row, in file order (gpqa/openai/utils.py
    l. 221-242); the gold letter is the right answer's place."""
    state = random.getstate()
    try:
        random.seed(seed)
        letters = ""
        for r in rows:
            choices = [r["incorrect_answers"][0], r["incorrect_answers"][1], r["incorrect_answers"][2],
                       r["correct_answer"]]
            random.shuffle(choices)
            letters += chr(65 + choices.index(r["correct_answer"]))
        return letters
    finally:
        random.setstate(state)


@needs_gpqa
def test_gpqa_option_order_is_the_harness_procedure_with_our_seed():
    """Pinned: the gold letters equal an independent re-run of s1's shuffle with --gpqa-seed (0 by
    default; 1234 is vLLM's re-seed, the other candidate for s1's order). The first ten are written
    out, so that a change of procedure, file or Python's random shows here."""
    with gzip.open(GPQA_GZ, "rt") as f:
        data = [json.loads(line) for line in f]
    for seed, first10 in ((0, "DCDCCACADB"), (1234, "DBCAADAABB")):
        gold = "".join(q["gold"] for q in E.load_benchmark("gpqa", gpqa_seed=seed))
        assert gold == harness_gold_letters(data, seed) and gold[:10] == first10, seed
    assert E.parse_args([]).gpqa_seed == 0


@needs_gpqa
def test_gpqa_loads_from_the_gzip_with_s1s_prompt_and_a_fixed_shuffle():
    questions = E.load_benchmark("gpqa")
    with gzip.open(GPQA_GZ, "rt") as f:
        data = [json.loads(line) for line in f]
    assert len(questions) == 198 and len({q["id"] for q in questions}) == 198
    for q, r in zip(questions, data):  # s1's template around some order of the four options, gold on the right one
        orders = [o for o in itertools.permutations(r["incorrect_answers"] + [r["correct_answer"]])
                  if q["prompt"] == r["question"] + "\n\n" + "\n".join(f"{x}) {c}" for x, c in zip("ABCD", o))]
        assert q["id"] == r["id"] and orders and orders[0]["ABCD".index(q["gold"])] == r["correct_answer"]
    counts = [sum(q["gold"] == letter for q in questions) for letter in "ABCD"]
    assert all(30 <= c <= 70 for c in counts), counts  # shuffled, not always last
    assert E.load_benchmark("gpqa") == questions  # the same options every time


def test_gpqa_hub_columns_and_bad_rows(tmp_path):
    row = {"Record ID": "r1", "Question": "Which is a noble gas?", "Correct Answer": "Neon",
           "Incorrect Answer 1": "Iron", "Incorrect Answer 2": "Zinc", "Incorrect Answer 3": "Tin"}
    good = tmp_path / "made_up.jsonl"
    good.write_text(json.dumps(row) + "\n")
    (q,) = E.load_benchmark("gpqa", str(good))
    assert q["id"] == "r1" and q["prompt"].startswith("Which is a noble gas?\n\nA) ") and f"{q['gold']}) Neon" in q["prompt"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "Correct Answer": ""}) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl row 1: no 'correct_answer'"):
        E.load_benchmark("gpqa", str(bad))
    with pytest.raises(SystemExit, match=r"nothing.jsonl: no such file"):
        E.load_benchmark("math500", str(tmp_path / "nothing.jsonl"))


def test_hub_route_reads_a_dataset_directory_and_names_what_it_cannot_reach(tmp_path):
    """A hub name goes through datasets.load_dataset; offline, a directory in the hub's layout takes
    the same route, and an uncached name fails with one line naming it."""
    (tmp_path / "m500").mkdir()
    (tmp_path / "m500" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("math500.jsonl")[:3]))
    questions = E.load_benchmark("math500", str(tmp_path / "m500"))
    assert questions == E.load_benchmark("math500", limit=3)
    with pytest.raises(SystemExit, match="someone/not-cached: not a local file and cannot be loaded from the hub"):
        E.load_benchmark("aime24", "someone/not-cached")


def test_no_plain_text_gpqa_in_the_repository():
    """The first GPQA question must not appear in any file of the repo (only the .venv is skipped)."""
    if not os.path.exists(GPQA_GZ):
        pytest.skip(f"{GPQA_GZ} is absent")
    with gzip.open(GPQA_GZ, "rt") as f:
        needle = json.loads(f.readline())["question"][:60].encode()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "__pycache__")]
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert needle not in f.read(), os.path.join(folder, name)


# ----------------------------------------------------------------------------------------------
# The paper's metrics

AIME24_BF = [(500, 0.0), (1000, 13.3), (2000, 30.0), (3933, 43.3), (5300, 50.0), (6657, 53.3), (7319, 56.7)]
CAPS = [500, 1000, 2000, 4000, 32768, 32768, 32768]  # caps 500..4000, then auto (no cap, 2x and 4x Wait)


def test_scaling_metrics_reproduce_the_published_budget_forcing_row():
    """The paper's Figure 1 AIME24 points (read off s1's visuals/scaling.pdf) and its budget-forcing row in
    the table of test-time scaling methods: Control 100 %, Scaling 15, Performance 56.7."""
    m = E.scaling_metrics([(a, f, 0, cap) for (a, f), cap in zip(AIME24_BF, CAPS)])
    assert m["control"] == 1.0 and m["performance"] == 56.7
    assert round(m["scaling"]) == 15
    # the published rejection-sampling runs (s1's visuals/rejection_stretched.pdf) show inverse scaling: -35
    rs = [(3703, 36.7), (4344, 33.3), (4734, 30.0), (5193, 26.7), (5293, 23.3)]
    assert abs(E.scaling_metrics([(a, f, 0, 32768) for a, f in rs])["scaling"] + 35) < 1
    # a run whose average exceeds its cap does not respect the budget
    assert E.scaling_metrics([(500, 10, 0, 400), (900, 20, 0, 1000)])["control"] == 0.5


def make_sample(qid, i, extracted, correct, where="boxed", **kw):
    return {"id": qid, "sample": i, "extracted": extracted, "extracted_from": where, "correct": correct,
            "status": "ok" if extracted is not None else "no answer", "thinking_tokens": 10 * (i + 1),
            "answer_tokens": 5, "ended": "natural", "finished": True, "text": respond(f"\\boxed{{{extracted}}}"), **kw}


def test_avg_maj_pass_at_n():
    q1 = [make_sample("1", 0, "0.5", True), make_sample("1", 1, "\\frac{2}{3}", False),
          make_sample("1", 2, "\\frac{1}{2}", True), make_sample("1", 3, None, False)]  # right answers vote together
    q2 = [make_sample("2", 0, "3", False), make_sample("2", 1, "7", True),
          make_sample("2", 2, "03", False), make_sample("2", 3, "7", True)]  # 2-2 tie: the first seen (3) wins
    r = E.summarize("math500", "auto", [q1, q2], 32768)
    assert r["accuracy"] == pytest.approx((2 / 4 + 2 / 4) / 2) and r["accuracy_se"] == pytest.approx(0.0)
    assert r["maj"] == 0.5 and r["maj_se"] == pytest.approx(0.5)  # values 1, 0: stdev 0.707 / sqrt 2
    assert r["pass"] == 1.0 and r["failures"] == {"no answer": ["1"]}
    letters = [make_sample("g", 0, "B", False), make_sample("g", 1, "C", True), make_sample("g", 2, "B", False)]
    assert not E.majority_correct("gpqa", letters) and E.majority_correct("gpqa", letters[1:2])


def test_paired_standard_error_against_numpy():
    """Per-question verdicts of two runs on the same 12 questions: the paired SE is the SE of the mean
    of the per-question differences, not the two runs' SEs combined as if independent."""
    import numpy as np
    wait = [1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    nocap = [1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    d = np.array(wait, float) - np.array(nocap, float)
    diff, se = E.paired_difference(wait, nocap)
    assert diff == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
    unpaired = np.hypot(*(np.std(x, ddof=1) / np.sqrt(len(x)) for x in (wait, nocap)))
    assert se < 0.7 * unpaired  # the runs agree on 9 of 12 questions
    with pytest.raises(ValueError):
        E.paired_difference(wait, nocap[1:])
    gains = E.extension_gains({("mini", "nocap"): nocap, ("mini", "wait1"): wait, ("mini", "8"): nocap,
                               ("mini", "8+wait1"): nocap, ("math500", "auto"): wait, ("math500", "wait2"): nocap})
    assert [(g["benchmark"], g["setting"], g["against"]) for g in gains] == [
        ("mini", "wait1", "nocap"), ("mini", "8+wait1", "8"), ("math500", "wait2", "auto")]
    assert (gains[0]["difference"], gains[0]["se"]) == (diff, se) and gains[1]["difference"] == 0
    assert gains[2]["difference"] == pytest.approx(-d.mean())


def test_sample_stats_count_caps_context_and_missing_answers():
    samples = [make_sample("1", 0, "1", True, ended="capped"), make_sample("2", 1, "2", True, ended="length", finished=False),
               make_sample("3", 2, None, False, text=respond("I give up"))]
    s = E.sample_stats(samples)
    assert (s["avg_thinking_tokens"], s["min_thinking_tokens"], s["max_thinking_tokens"]) == (20, 10, 30)
    assert (s["hit_cap"], s["out_of_context"], s["no_answer_or_boxed"], s["unfinished"]) == (1, 1, 1, 1)


def test_default_sweep_is_s1s_grid():
    """s1 eval/commands.sh l. 25-31: max_tokens_thinking=500, 1000, 2000, 4000, 8000, 16000, auto;
    l. 32-35: max_tokens_thinking=auto with thinking_n_ignore=1, 2, 4, 6 and thinking_n_ignore_str=Wait."""
    caps = [500, 1000, 2000, 4000, 8000, 16000, "auto"]
    waits = [1, 2, 4, 6]
    settings = [E.parse_setting(s)[1] for s in E.parse_args(["--settings", "sweep"]).settings]
    assert settings == ([{"max_thinking_tokens": c, "num_ignore": 0} for c in caps]
                        + [{"max_thinking_tokens": "auto", "num_ignore": k} for k in waits])
    assert E.parse_args([]).ignore_str == "Wait"  # waitK appends --ignore-str
    # l. 31, 38-40, 33: auto; ignored twice with no string, "Hmm", "Alternatively"; and "Wait"
    ablation = [E.parse_setting(s)[1] for s in E.parse_args(["--settings", "ablation"]).settings]
    assert ablation == [{"max_thinking_tokens": "auto", "num_ignore": 0}] + [
        {"max_thinking_tokens": "auto", "num_ignore": 2, "ignore_str": s} for s in ("", "Hmm", "Alternatively")] + [
        {"max_thinking_tokens": "auto", "num_ignore": 2}]


def test_settings():
    assert E.parse_setting("512") == ("512", {"max_thinking_tokens": 512, "num_ignore": 0})
    assert E.parse_setting("auto") == ("auto", {"max_thinking_tokens": "auto", "num_ignore": 0})
    assert E.parse_setting("nocap") == ("nocap", {"max_thinking_tokens": None, "num_ignore": 0})
    assert E.parse_setting("none") == ("none", {"max_thinking_tokens": None, "num_ignore": 0})  # run with think=False
    assert E.parse_setting("Wait2") == E.parse_setting("auto+wait2") == ("wait2", {"max_thinking_tokens": "auto", "num_ignore": 2})
    assert E.parse_setting("4096+wait1") == ("4096+wait1", {"max_thinking_tokens": 4096, "num_ignore": 1})
    assert E.parse_setting("ignore2") == ("ignore2", {"max_thinking_tokens": "auto", "num_ignore": 2, "ignore_str": ""})
    assert E.parse_setting("Ignore2:Hmm") == ("ignore2:Hmm", {"max_thinking_tokens": "auto", "num_ignore": 2, "ignore_str": "Hmm"})
    assert E.parse_setting("nocap+ignore1:Alternatively") == (
        "nocap+ignore1:Alternatively", {"max_thinking_tokens": None, "num_ignore": 1, "ignore_str": "Alternatively"})
    for bad in ("abc", "0", "512+hmm", "-5", "wait2:Hmm", "ignore2:", "none+wait1", "none:x", "nottc", "500:Hmm", "wait0",
                "500+ignore0"):
        with pytest.raises(ValueError, match="setting"):
            E.parse_setting(bad)
    assert E.parse_args(["--settings", "sweep", "auto"]).settings == E.SWEEP
    for argv in (["--settings", "lots"], ["--n", "4"], ["--data", "mmlu=x.jsonl"]):
        with pytest.raises(SystemExit):
            E.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Whole runs

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Qwen2 with a byte-level tokenizer, as tests/conftest.py's tiny_sft builds it."""
    path = tmp_path_factory.mktemp("eval_model") / "model"
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(path)
    chat.build_byte_tokenizer(str(path))
    return str(path)


def test_a_run_with_a_stand_in_decoder_grades_reports_and_resumes(tmp_path, tiny_model, monkeypatch):
    """The pipeline around sample.generate: a stand-in answers question k right when k is even and
    thinks 100 tokens per Wait. Checks the numbers in results.json, the files, and that a rerun
    generates nothing."""
    calls, seeds = [], []

    def generate(model, tokenizer, questions, settings, n=1, on_result=None, **kw):
        calls.append((len(questions), tuple((s["max_thinking_tokens"], s["num_ignore"]) for s in settings), n,
                      kw["max_tokens"]))
        seeds.append(kw["seed"])
        out = []
        for question in questions:
            k = next(i for i, q in enumerate(math500) if q["prompt"] == question)
            answer = f"\\boxed{{{math500[k]['gold']}}}" if k % 2 == 0 else "I am not sure."
            for _ in range(n):
                for s in settings:
                    out.append({"prompt": chat.prompt_text(question), "text": respond(answer), "answer": answer,
                                "thinking_tokens": 100 * (1 + s["num_ignore"]), "answer_tokens": 7, "ended": "natural",
                                "forced": [{"at": 100, "what": "Wait"}] * s["num_ignore"], "finished": True})
                    on_result(len(out) - 1, out[-1])
        return out

    math500 = E.load_benchmark("math500", limit=6)
    monkeypatch.setitem(sys.modules, "sample", types.SimpleNamespace(
        generate=generate,
        load_for_generation=lambda name, device, dtype, max_tokens, rows, tokenizer=None, timeout_min=60: (
            hf_checkpoint.from_pretrained(name, dtype=getattr(torch, dtype)), chat.load_tokenizer(tokenizer or name), 1, 0)))
    out = tmp_path / "run"
    argv = ["--model", tiny_model, "--benchmarks", "math500", "--limit", "6", "--settings", "wait1", "auto",
            "--batch-size", "4", "--device", "cpu", "--dtype", "float32", "--out", str(out)]
    runs, scaling = E.main(E.parse_args(argv))
    assert calls == [(6, (("auto", 1), ("auto", 0)), 1, 32768)]  # every setting of every question in one run
    assert [r["accuracy"] for r in runs] == [0.5, 0.5]
    assert [r["failures"] for r in runs] == [{"unparsed": [q["id"] for q in math500[1::2]]}] * 2  # named, not swallowed
    assert [r["avg_thinking_tokens"] for r in runs] == [200, 100]
    assert scaling["math500"]["scaling"] == 0.0 and scaling["math500"]["control"] == 1.0
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert len(records) == 12 and {"prompt", "thinking_tokens", "answer_tokens", "forced", "extracted", "correct",
                                    "status"} <= set(records[0])
    assert json.load(open(out / "results.json"))["runs"][0]["accuracy"] == 0.5
    assert "| math500 | wait1 | 6 | 50.0 ± 22.4 |" in (out / "results.md").read_text()
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a kill mid-write leaves half a line: the rerun drops it (the file is clean again) and generates
    # nothing; a sample missing from the file is generated again, alone
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"benchmark": "math500", "setting": "auto", "id": "x"')
    calls.clear()
    E.main(E.parse_args(argv))
    assert calls == [] and [json.loads(line) for line in open(out / "samples.jsonl")] == records
    config = json.load(open(out / "eval_config.json"))
    assert config["gpqa_seed"] == 0
    del config["gpqa_seed"]  # an --out from before --gpqa-seed goes on as seed 0
    (out / "eval_config.json").write_text(json.dumps(config))
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    E.main(E.parse_args(argv))
    assert calls == [(1, (("auto", 0),), 1, 32768)]
    # a prompt that cannot fit the context is named before anything runs
    with pytest.raises(SystemExit, match="math500 question test/precalculus/807.json: the prompt has 264 tokens, --max-tokens is 100"):
        E.main(E.parse_args(argv[:-1] + [str(tmp_path / "short"), "--max-tokens", "100"]))
    # samples made with other generation settings are never mixed in
    with pytest.raises(SystemExit, match="temperature"):
        E.main(E.parse_args(argv + ["--temperature", "0.6", "--n", "2"]))
    # --n 2: both samples of every question in the same run (sample.py gives each its own draws)
    calls.clear(), seeds.clear()
    runs, _ = E.main(E.parse_args(argv[:-1] + [str(tmp_path / "n2"), "--temperature", "0.6", "--n", "2"]))
    assert calls == [(6, (("auto", 1), ("auto", 0)), 2, 32768)] and runs[0]["samples_per_question"] == 2
    assert "| math500 | wait1 | 6 | 50.0 ± 22.4 | 50.0 ± 22.4 | 50.0 ± 22.4 |" in (tmp_path / "n2" / "results.md").read_text()


def test_sweep_with_a_tiny_model_writes_table_samples_and_plot(tmp_path, tiny_model):
    """eval.py end to end with the real sample.py: two tiny budgets on two benchmarks."""
    try:
        import sample  # noqa: F401
    except ImportError:
        pytest.skip("sample.py not written yet")
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "--model", tiny_model, "--benchmarks", "aime25", "math500",
           "--limit", "1", "--settings", "8", "16", "--max-tokens", "400", "--device", "cpu", "--dtype", "float32",
           "--out", str(out)]
    proc = run(cmd)
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert len(records) == 4 and {(r["benchmark"], r["setting"]) for r in records} == {
        (b, s) for b in ("aime25", "math500") for s in ("8", "16")}
    assert all(r["thinking_tokens"] <= int(r["setting"]) for r in records)
    table = (out / "results.md").read_text()
    assert "| aime25 | 8 | 1 |" in table and "| math500 | 16 | 1 |" in table and "Control" in table
    assert (out / "scaling.png").stat().st_size > 1000
    again = run(cmd)
    assert "4 of 4 samples already" in again.stdout and "generating 0" in again.stdout, proc.stdout


def test_none_is_s1s_nottc_no_thinking_prefix(tmp_path, tiny_model, monkeypatch):
    """"none" (s1's nottc, commands.sh l. 22) runs in a sample.generate call of its own with
    think=False: its prompt ends at "<|im_start|>assistant\n", with no "<|im_start|>think" and nothing
    forced; the other settings of the same questions keep the thinking prefix. The real sample.py."""
    import sample
    calls, real = [], sample.generate
    monkeypatch.setattr(sample, "generate", lambda *a, **kw: calls.append((kw["settings"], kw["think"])) or real(*a, **kw))
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "question": "2+3?", "answer": "5"}\n{"id": "b", "question": "1+1?", "answer": "2"}\n')
    out = tmp_path / "run"
    E.main(E.parse_args(["--model", tiny_model, "--benchmarks", "mine", "--data", f"mine={path}", "--settings",
                         "none", "4", "--max-tokens", "120", "--device", "cpu", "--out", str(out)]))
    assert sorted(calls, key=str) == [([{"max_thinking_tokens": 4, "num_ignore": 0}], True),
                                      ([{"max_thinking_tokens": None, "num_ignore": 0}], False)]
    records = {(r["setting"], r["id"]): r for r in map(json.loads, open(out / "samples.jsonl"))}
    for qid, question in (("a", "2+3?"), ("b", "1+1?")):
        none, capped = records[("none", qid)], records[("4", qid)]
        assert none["prompt"] == chat.prompt_text(question) and chat.THINK not in none["prompt"]
        assert none["forced"] == [] and none["thinking_tokens"] == 0
        assert capped["prompt"] == chat.prompt_text(question) + chat.THINK and capped["thinking_tokens"] <= 4
    assert json.load(open(out / "eval_config.json"))["dtype"] == "float32"  # --dtype auto on a CPU


def test_each_setting_appends_its_own_string(tmp_path, bigram, monkeypatch):
    """s1's extrapolation ablation in one run (commands.sh l. 33, 38-39): "Wait" (--ignore-str),
    "Hmm" and no string at all, each setting with its own, on the bigram model that ends its
    thinking after "abc". The real sample.py."""
    import sample
    model, tokenizer = bigram
    monkeypatch.setattr(sample, "load_for_generation", lambda *a, **kw: (model, tokenizer, 1, 0))
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "q", "question": "q", "answer": "7"}\n')
    E.main(E.parse_args(["--model", "bigram", "--benchmarks", "mine", "--data", f"mine={path}", "--settings", "wait1",
                         "ignore1:Hmm", "ignore1", "--max-tokens", "400", "--device", "cpu", "--out", str(tmp_path / "run")]))
    records = {r["setting"]: r for r in map(json.loads, open(tmp_path / "run" / "samples.jsonl"))}
    assert {s: r["forced"][0]["what"] for s, r in records.items()} == {"wait1": "Wait", "ignore1:Hmm": "Hmm", "ignore1": ""}
    assert records["wait1"]["text"].startswith("abcWaitabc<|im_start|>answer")
    assert records["ignore1:Hmm"]["text"].startswith("abcHmm") and records["ignore1"]["text"].startswith("abc")


def test_a_benchmark_of_ones_own_from_a_local_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "question": "What is 2+3?", "answer": "5"}\n{"id": "b", "question": "Q", "answer": "007"}\n')
    qs = E.load_benchmark("mine", str(path))
    assert [(q["id"], q["prompt"], q["gold"]) for q in qs] == [("a", "What is 2+3?", "5"), ("b", "Q", "7")]
    args = E.parse_args(["--benchmarks", "mine", "--data", f"mine={path}"])
    assert args.data == {"mine": str(path)}
    with pytest.raises(SystemExit):
        E.parse_args(["--benchmarks", "mine"])  # no source for it
