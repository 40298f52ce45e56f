"""prepare.py and curate.py on a small local pool (GSM8K records, hand-written planted records,
questions copied from the eval sets) with hand-built models whose every reply is known: a teacher
that thinks "abc" and answers 51, a solver that answers 7, served by serve.py's real
OpenAI-compatible server."""
import gzip
import json
import os
import random
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import ROOT, bigram_model, run, tiny_hf_model

import curate
import prepare
import sample
import serve as server_module
import train
from machinery import api, benchmarks, chat, hf_checkpoint, jsonl, mini, sources

TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
            "--nproc-per-node", "2"]
FIX = os.path.join(ROOT, "tests", "fixtures")
GSM8K, PLANTED, MSC = (os.path.join(FIX, f)
                       for f in ("gsm8k_test_head.jsonl", "planted.jsonl", "msc_subset.json"))
TEACHER = {"k": "a", "a": "b", "b": "c", "c": "<|im_start|>", "r": "\n", "\n": "5", "5": "1",
           "1": "<|im_end|>"}
# a plain chat answer (no thinking phase) starts after "assistant\n"
SOLVER = {"\n": "7", "7": "<|im_end|>"}
GRADER = {"k": "<|im_start|>", "r": "\n", "\n": "Y", "Y": "e", "e": "s",  # replies "Yes"
          "s": "<|im_end|>"}


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def write(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


def serve(model, tokenizer, context=4096):
    server = server_module.make_server(model, tokenizer, port=0, context=context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Checkpoints of the teacher and the solver (byte tokenizer), and the teacher served by
    serve.py."""
    root = tmp_path_factory.mktemp("bigrams")
    tokenizer = chat.build_byte_tokenizer(str(root / "tok"))
    dirs = {}
    for name, chain in (("teacher", TEACHER), ("solver", SOLVER)):
        hf_checkpoint.save_pretrained(bigram_model(tokenizer, chain), str(root / name),
                                      tokenizer_dir=str(root / "tok"))
        dirs[name] = str(root / name)
    teacher = bigram_model(tokenizer, TEACHER)
    server, url = serve(teacher, tokenizer)
    yield dict(dirs, tok=str(root / "tok"), url=url, teacher_model=teacher, tokenizer=tokenizer)
    server.shutdown()


def stage_counts(text):
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^stage (\S+) .*?(\d+)(?:  |$)", text, re.M)}


def test_pipeline_end_to_end_with_hand_checked_counts(models, tmp_path, capsys):
    # Questions planted from the eval sets must go; one sharing only 7 words with MATH500 must stay.
    math500, aime24, aime25 = (benchmarks.load_benchmark(b)
                               for b in ("math500", "aime24", "aime25"))
    near = (" ".join(math500[1]["prompt"].split()[:7])
            + " apples are red and bananas are yellow. Why?")
    planted = [{"question": math500[0]["prompt"], "answer": "1"},
               {"question": "Answer the following. " + aime24[0]["prompt"], "answer": "2"},
               # case and spacing differ
               {"question": "  ".join(aime25[3]["prompt"].upper().split()), "answer": "3"},
               {"question": near, "answer": "3"}]
    gpqa = benchmarks.BENCHMARKS["gpqa"][3]
    if os.path.exists(gpqa):  # never written to the repo: read from the gzip copy at test time
        with gzip.open(gpqa, "rt") as f:
            planted.insert(0, {"question": json.loads(f.readline())["question"], "answer": "A"})
    evals = write(tmp_path / "from_evals.jsonl", planted)
    pool, distilled, featurized = (str(tmp_path / f)
                                   for f in ("pool.jsonl", "distilled.jsonl", "featurized.jsonl"))
    prepare.main(["collect", "--sources", "gsm8k", "planted", "evals", "--local", f"gsm8k={GSM8K}",
                  "--local", f"planted={PLANTED}", "--local", f"evals={evals}",
                  "--eval-sets", "aime24", "aime25", "math500", "gpqa", "--out", pool])
    out = capsys.readouterr().out
    # hand-checked: planted.jsonl record 10 repeats 8 words of GSM8K record 0; records 8 and 9 are
    # the same question
    assert re.search(r"gsm8k\s+31\s+0\s+0\s+31", out)
    assert re.search(r"planted\s+13\s+0\s+1\s+12", out)
    assert re.search(rf"evals\s+{len(planted)}\s+{len(planted) - 1}\s+0\s+1", out)
    assert "exact duplicates removed: 1" in out and "pool: 43 questions" in out
    questions = [r["question"] for r in read(pool)]
    assert near in questions and not {p["question"] for p in planted[:-1]} & set(questions)
    assert all(r["question"] in questions for r in read(GSM8K))

    prepare.main(["distill", "--pool", pool, "--teacher", "local", "--model", models["teacher"],
                  "--max-tokens", "1024", "--out", distilled])
    records = read(distilled)
    assert len(records) == 43 and all((r["thinking"], r["attempt"], r["distill_status"])
                                      == ("abc", "51", "ok") for r in records)
    assert "43 ok" in capsys.readouterr().out

    features = ["features", "--data", distilled, "--solvers", models["solver"],
                "--tokenizer", models["tok"], "--solver-max-tokens", "1024", "--dtype", "float32",
                "--classifier", "llm", "--llm-model", "s1", "--base-url", models["url"],
                "--msc", MSC, "--out", featurized]
    curate.main(features)
    records = {r["question"]: r for r in read(featurized)}
    by_gold = lambda gold: sorted(q for q, r in records.items()
                                  if curate.reference_answer(r["solution"]) == gold)
    solved = sorted(q for q, r in records.items() if r["solver_correct"][models["solver"]])
    # GSM8K records 18 and 22, planted records 8 and 12
    assert solved == by_gold("7") and len(solved) == 4
    assert sorted(q for q, r in records.items() if r["teacher_correct"]) == by_gold("51")
    assert len(by_gold("51")) == 4
    # the classifier's "51"; two preset
    assert {r["domain"] for r in records.values()} == {"Geometry", "Number theory"}
    assert all(r["length"] == 3 for r in records.values())  # "abc" in the byte tokenizer
    curate.main(features)  # everything is cached now: nothing is generated or asked again
    again = capsys.readouterr().out.split("features: 43 records")[-1]
    assert "43 answers cached, 0 to generate" in again and "0 to ask s1" in again

    s1k = str(tmp_path / "s1K.jsonl")
    select = ["select", "--data", featurized, "--n", "20", "--long-min-length", "2"]
    curate.main(select + ["--out", s1k])
    counts = stage_counts(capsys.readouterr().out)
    # 1a: no reference solution (planted 7); 1b: [asy] outside AIME, ![Image], "p3.", **12**
    # (planted 1, 3, 4, 5); 2: the solver's four right answers; 3a: the AIME question the teacher
    # got right and the "long" MATH one
    assert counts == {"0": 43, "1a": 42, "1b": 38, "2": 34, "3a": 2, "3b": 20}
    chosen = read(s1k)
    assert [r["question"] for r in chosen[:2]] == [
        "What is the largest two-digit multiple of 17 that is less than 60?",
        "What is the product of the primes 3 and 17?"]
    # the other domain
    assert "What is the remainder when 2024 is divided by 9?" in [r["question"] for r in chosen]
    assert train.to_triples(chosen, s1k)[0][1:] == ("abc", "51")  # train.py reads it as it is
    assert os.path.exists(str(tmp_path / "s1K.lengths.png"))
    summary = json.load(open(tmp_path / "s1K.summary.json"))
    assert summary["domains"] == {"Geometry": 19, "Number theory": 1}
    same, other = str(tmp_path / "same.jsonl"), str(tmp_path / "other.jsonl")
    curate.main(select + ["--out", same])
    curate.main(select + ["--out", other, "--seed", "1"])
    assert read(same) == chosen and read(other) != chosen and len(read(other)) == 20

    for selection, n, expected in (("random", 10, 10), ("longest", 5, 5), ("diverse", 10, 10),
                                   ("all", 20, 43)):
        path = str(tmp_path / f"{selection}.jsonl")
        curate.main(["select", "--data", featurized, "--n", str(n), "--selection", selection,
                     "--out", path])
        assert len(read(path)) == expected, selection
        assert selection == "all" or all(curate.formatting_ok(r) and not curate.missing_feature(r)
                                         for r in read(path))


def test_openai_compatible_teacher_round_trip_with_sample_server(models, tmp_path):
    pool = write(tmp_path / "pool.jsonl", read(GSM8K)[:6])
    out = str(tmp_path / "distilled.jsonl")
    prepare.main(["distill", "--pool", pool, "--base-url", models["url"], "--model", "s1",
                  "--workers", "3", "--out", out])
    direct = sample.generate(models["teacher_model"], models["tokenizer"],
                             [read(GSM8K)[0]["question"]], max_tokens=4096, progress=False)[0]
    assert (direct["thinking"], direct["answer"].strip()) == ("abc", "51")
    assert [(r["thinking"], r["attempt"], r["distill_status"])
            for r in read(out)] == [("abc", "51", "ok")] * 6
    cache = read(str(tmp_path / "distilled.cache.jsonl"))
    assert (sorted(r["question_hash"] for r in cache)
            == sorted(jsonl.question_hash(r["question"]) for r in read(pool)))


def stub_server(replies):
    """An HTTP server answering each POST with the next (status, body) of replies (the last
    repeats)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers.get("Authorization"), request))
            code, body = replies[min(len(seen), len(replies)) - 1]
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1", seen


def reply(**message):
    return 200, {"choices": [{"index": 0, "message": dict(role="assistant", **message)}]}


def test_client_retries_marks_bad_replies_and_stops_on_bad_credentials(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("TEST_KEY", "secret")
    monkeypatch.setattr(api, "BACKOFF_S", 0.01)
    pool = write(tmp_path / "pool.jsonl", [{"question": "What is 2+2?"}])
    distill = lambda url, out, *extra: prepare.main(["distill", "--pool", pool, "--base-url", url,
                                                     "--api-key-env", "TEST_KEY",
                                                     "--out", str(tmp_path / out), *extra])
    server, url, seen = stub_server([(503, {}), (429, {}),
                                     reply(content="<think>2 and 2</think>4")])
    distill(url, "a.jsonl")
    assert len(seen) == 3 and seen[0][0] == "Bearer secret"
    assert seen[0][1]["messages"][0]["content"] == "What is 2+2?"
    assert [(r["thinking"], r["attempt"], r["distill_status"])
            for r in read(tmp_path / "a.jsonl")] == [("2 and 2", "4", "ok")]
    server.shutdown()

    server, url, seen = stub_server([reply(content="<think>never closed")])
    distill(url, "b.jsonl")
    record = read(tmp_path / "b.jsonl")[0]  # kept and marked, not dropped
    assert ((record["distill_status"], record["distill_problem"])
            == ("malformed", "malformed: <think> is never closed"))
    distill(url, "b.jsonl")
    # a marked reply is not asked again...
    assert len(seen) == 1 and "1 already in" in capsys.readouterr().out
    distill(url, "b.jsonl", "--retry-failed")
    assert len(seen) == 2  # ...unless asked to
    server.shutdown()

    server, url, seen = stub_server([(401, {"error": {"message": "invalid key"}})])
    with pytest.raises(SystemExit, match=r"HTTP 401 .*check the API key in \$TEST_KEY"):
        distill(url, "c.jsonl")
    assert len(seen) == 1 and not os.path.exists(tmp_path / "c.jsonl")  # no retries, no output
    # nothing recorded for the question: the next run asks again
    assert read(tmp_path / "c.cache.jsonl") == []
    server.shutdown()


def test_split_reply():
    assert prepare.split_reply({"reasoning_content": " t ", "content": " a "}) == ("t", "a", None)
    assert prepare.split_reply({"content": "<think>t</think>a"}) == ("t", "a", None)
    # <think> was in the prompt
    assert prepare.split_reply({"content": "t</think>a"}) == ("t", "a", None)
    assert prepare.split_reply({"content": "just an answer"})[2] == "empty: no thinking"
    assert prepare.split_reply({"reasoning_content": "t", "content": ""})[2] == "empty: no answer"
    assert prepare.split_reply({"content": "<think>t"})[2] == "malformed: <think> is never closed"


def test_distill_questions_retraces_a_selected_set_as_it_is_for_training(models, tmp_path, capsys):
    """s1.1's recipe (s1 README l. 15): s1K's 1,000 questions, chosen with Gemini's features,
    traced again by DeepSeek-R1, nothing re-selected. Here: three records in s1K's layout (a trace
    as a list, Gemini's attempt), re-traced by the hand-built teacher, in their order, every
    column kept, ready for train.py."""
    s1k = [{"question": q, "solution": s, "cot_type": "math",
            "source_type": "qq8933/AIME_1983_2024", "metadata": "{}", "cot": None,
            "thinking_trajectories": [f"Gemini thinks about {q}"], "attempt": f"Gemini says {s}"}
           for q, s in (("What is 17 times 3?", "51"), ("What is 50 plus 1?", "51"),
                        ("What is 3 cubed?", "27"))]
    out = str(tmp_path / "s1K-1.1.jsonl")
    prepare.main(["distill", "--questions", write(tmp_path / "s1K.jsonl", s1k),
                  "--teacher", "local", "--model", models["teacher"], "--max-tokens", "1024",
                  "--out", out])
    assert "the 3 questions of" in capsys.readouterr().out
    records = read(out)
    assert [r["question"] for r in records] == [r["question"] for r in s1k]
    assert all((r["thinking"], r["attempt"], r["distill_status"]) == ("abc", "51", "ok")
               for r in records)
    # the old teacher's answer is kept aside
    assert [r["input_attempt"] for r in records] == [r["attempt"] for r in s1k]
    assert all(r["thinking_trajectories"] == k["thinking_trajectories"]
               and r["solution"] == k["solution"] for r, k in zip(records, s1k))
    # train.py reads the new traces
    assert train.to_triples(records, out) == [(r["question"], "abc", "51") for r in s1k]
    for argv, says in ((["distill", "--out", out], "one of the two"),
                       (["distill", "--pool", out, "--questions", out, "--out", out],
                        "one of the two")):
        with pytest.raises(SystemExit):
            prepare.parse_args(argv)
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit,
                       match=r"--questions .*record 1: needs a non-empty string 'question'"):
        prepare.main(["distill", "--questions",
                      write(tmp_path / "bad.jsonl", [s1k[0], {"question": " "}]), "--out", out])


def test_interrupted_distill_resumes_without_repeating_or_losing(tmp_path, monkeypatch, capsys):
    pool, out = str(tmp_path / "pool.jsonl"), str(tmp_path / "d.jsonl")
    cache = str(tmp_path / "d.cache.jsonl")
    prepare.main(["collect", "--sources", "mini", "--n", "30", "--eval-sets", "aime24",
                  "--out", pool])
    args = ["distill", "--pool", pool, "--teacher", "mini", "--out", out]
    prepare.main(args + ["--limit", "4"])
    # not yet asked: marked, not dropped
    assert [r["distill_status"] for r in read(out)].count("pending") == 26
    real, calls = mini.teacher, []

    def interrupted(*a):  # Ctrl-C during the 7th question of this run
        calls.append(a)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(mini, "teacher", interrupted)
    with pytest.raises(SystemExit, match="interrupted: 6 replies saved"):
        prepare.main(args)
    monkeypatch.setattr(mini, "teacher", real)
    before = open(cache).read()
    assert len(before.splitlines()) == 10
    with open(cache, "a") as f:
        f.write('{"question_hash": "0123')  # what a kill in the middle of a write leaves
    capsys.readouterr()
    prepare.main(args)
    # jsonl.py reports on stderr
    assert "dropping a half-written last line" in capsys.readouterr().err
    records = read(cache)
    assert open(cache).read().startswith(before) and len(records) == 30
    assert (sorted(r["question_hash"] for r in records)
            == sorted(jsonl.question_hash(r["question"]) for r in read(pool)))
    assert all(r["distill_status"] == "ok" for r in read(out))


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    """A random tiny Qwen2 (2 KV heads: it splits over 2 processes) with the byte tokenizer, whose
    replies differ from question to question, and a pool of short mini questions."""
    root = tmp_path_factory.mktemp("random")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(
        root / "model")
    chat.build_byte_tokenizer(str(root / "model"))
    return str(root / "model"), write(root / "pool.jsonl", mini.rows(6, 0, 1, 3))


def by_hash(records):
    return sorted(records, key=lambda r: (r["question_hash"], r.get("solver", "")))


def test_local_teacher_under_torchrun_matches_one_process(random_lm, tmp_path):
    model, pool = random_lm
    distill = ["distill", "--pool", pool, "--teacher", "local", "--model", model,
               "--max-tokens", "180", "--max-thinking-tokens", "16", "--batch-size", "2"]
    prepare.main(distill + ["--out", str(tmp_path / "one.jsonl")])
    one = read(tmp_path / "one.cache.jsonl")
    # different replies: a mix-up would show
    assert len({(r["thinking"], r["attempt"]) for r in one}) > 3
    two = tmp_path / "two"
    two.mkdir()
    write(two / "d.cache.jsonl", one[:2])  # a run stopped after two replies: rank 0 alone knows
    out = run([*TORCHRUN, "prepare.py", *distill, "--out", str(two / "d.jsonl")]).stdout
    assert read(two / "d.jsonl") == read(tmp_path / "one.jsonl")
    cache = read(two / "d.cache.jsonl")
    # each reply once: rank 1 wrote nothing
    assert cache[:2] == one[:2] and by_hash(cache) == by_hash(one)
    assert sorted(os.listdir(two)) == ["d.cache.jsonl", "d.jsonl"]
    # rank 1 left after generating
    assert out.count("4 to ask") == 1 and out.count("-> " + str(two / "d.jsonl")) == 1


def test_local_solver_under_torchrun_matches_one_process(random_lm, tmp_path):
    model, pool = random_lm
    # its prompt does not fit --solver-max-tokens: no answer
    long = "Which of " + "a" * 160 + "z is after m?"
    pool = write(tmp_path / "pool.jsonl",
                 read(pool) + [dict(read(pool)[0], question=long, solution="z")])
    data = str(tmp_path / "d.jsonl")
    prepare.main(["distill", "--pool", pool, "--teacher", "mini", "--out", data])
    features = ["features", "--data", data, "--solvers", model, "mini", "--tokenizer", model,
                "--dtype", "float32", "--solver-max-tokens", "170", "--batch-size", "2",
                "--classifier", "none"]
    curate.main(features + ["--out", str(tmp_path / "one.jsonl")])
    one = read(tmp_path / "one.answers.jsonl")
    texts = [r["text"] for r in one if r["solver"] == model]
    assert len(texts) == 7 and texts.count(None) == 1 and len(set(texts)) == 7
    two = tmp_path / "two"
    two.mkdir()
    write(two / "f.answers.jsonl", one[:2])
    out = run([*TORCHRUN, "curate.py", *features, "--out", str(two / "f.jsonl")]).stdout
    assert read(two / "f.jsonl") == read(tmp_path / "one.jsonl")
    answers = read(two / "f.answers.jsonl")
    # each reply once: rank 1 wrote nothing
    assert answers[:2] == one[:2] and by_hash(answers) == by_hash(one)
    assert sorted(os.listdir(two)) == ["f.answers.jsonl", "f.jsonl"]
    assert out.count("features -> ") == 1 and out.count("to generate") == 2


def test_mini_solver_is_right_on_short_questions_and_wrong_on_long_ones():
    records = mini.rows(2000, 0, 1, 9)
    right = {}
    for r in records:
        steps = eval(r["metadata"])["steps"]
        reply = mini.solver(r["question"], 0.25, 0)
        assert reply == mini.solver(r["question"], 0.25, 0)  # seeded by the question
        # graded as a model's reply would be
        correct, status = curate.grade_math(r["solution"], reply)
        assert status == "ok"
        right.setdefault(steps, []).append(correct)
    rate = {s: np.mean(v) for s, v in right.items()}
    for s in (1, 5, 9):  # (1 - 0.25) ** letters, s + 1 letters for s steps: 0.56, 0.18, 0.06
        assert abs(rate[s] - 0.75 ** (s + 1)) < 0.1, (s, rate[s])
    assert all(mini.solver(r["question"], 0.0, 0) == "Answer: " + r["answer"]
               for r in records[:50])


def test_mini_pipeline_decontaminates_selects_by_difficulty_domain_and_length(models, tmp_path,
                                                                              capsys):
    test, pool, d, f, s = (str(tmp_path / n)
                           for n in ("test.jsonl", "pool.jsonl", "d.jsonl", "f.jsonl", "s.jsonl"))
    prepare.main(["collect", "--sources", "mini", "--n", "150", "--seed", "1", "--steps", "1", "3",
                  "--eval-sets", "aime24", "--out", test])
    # eval.py reads it as a benchmark
    assert benchmarks.load_benchmark("minitest", test)[0]["gold"] == read(test)[0]["answer"]
    prepare.main(["collect", "--sources", "mini", "--n", "300", "--steps", "1", "5",
                  "--eval-sets", "aime24", "minitest", "--eval-data", f"minitest={test}",
                  "--out", pool])
    overlap = ({r["question"] for r in read(test)}
               & {r["question"] for r in mini.rows(300, 0, 1, 5)})
    # short questions compared whole
    assert len(overlap) > 5 and len(read(pool)) == 300 - len(overlap)
    prepare.main(["distill", "--pool", pool, "--teacher", "mini", "--out", d])
    curate.main(["features", "--data", d, "--solvers", "mini", "--tokenizer", models["tok"],
                 "--classifier", "none", "--out", f])
    curate.main(["select", "--data", f, "--n", "40", "--out", s])
    counts = stage_counts(capsys.readouterr().out)
    easy = {r["question"] for r in read(pool)
            if mini.solver(r["question"], mini.SOLVER_ERROR_RATE, 0) == "Answer: " + r["answer"]}
    assert easy and counts["2"] == len(read(pool)) - len(easy) and counts["3b"] == 40
    chosen, hard = read(s), [r for r in read(f) if r["question"] not in easy]
    assert {r["domain"] for r in chosen} == {"search"}
    # longer traces preferred
    assert (np.mean([r["length"] for r in chosen])
            > np.mean([r["length"] for r in hard]) + 5)
    assert all(t[1] and t[2] for t in train.to_triples(chosen, s))


def test_selection_loop_weights_domains_uniformly_and_lengths_by_two_to_minus_rank():
    record = lambda d, n, i: {"domain": d, "length": n, "question_hash": f"{d}{i}"}
    pool = [record("a", n, i) for i, n in enumerate([40, 10, 30, 20])]
    picks = [curate.sample_by_length(pool, 1, np.random.default_rng(s))[0]["length"]
             for s in range(3000)]
    # 2^-rank, normalised
    for length, p in ((40, 8 / 15), (30, 4 / 15), (20, 2 / 15), (10, 1 / 15)):
        assert abs(picks.count(length) / 3000 - p) < 0.03
    pool = [record("small", 1, 0)] + [record("big", 1, i) for i in range(100)]
    small = [curate.sample_by_length(pool, 1, np.random.default_rng(s))[0]["domain"]
             for s in range(2000)]
    assert abs(small.count("small") / 2000 - 0.5) < 0.04  # the domain is drawn first, uniformly
    everything = curate.sample_by_length(pool, 500, np.random.default_rng(0))
    assert len(everything) == 101  # runs out gracefully
    seeds = [pool[5]]
    assert curate.sample_by_length(pool, 3, np.random.default_rng(0), seeds)[0] is pool[5]


def test_benchmark_prior_halves_gpqa_against_aime():
    records = ([{"source_type": curate.GPQA, "domain": d}
                for d in ["Physics"] * 4 + ["Chemistry"] * 2]
               + [{"source_type": curate.AIME, "domain": d}
                  for d in ["Geometry"] * 3 + ["Number theory"] * 3]
               + [{"source_type": "other", "domain": "Biology"}])
    assert curate.benchmark_prior(records) == {"Physics": 2 / 9, "Chemistry": 1 / 9,
                                               "Geometry": 3 / 9, "Number theory": 3 / 9}
    pool = [{"domain": d, "length": 1, "question_hash": f"{d}{i}"}
            for d in ("Physics", "Biology") for i in range(50)]
    picked = curate.sample_by_length(pool, 40, np.random.default_rng(0), uniform_until=0,
                                     prior={"Physics": 1.0})
    # after uniform_until, domains come from the prior
    assert {r["domain"] for r in picked} == {"Physics"}


def test_quality_patterns_are_s1s():
    rng = random.Random(0)
    for _ in range(3000):  # our one regex = s1's 999 substring tests
        text = "".join(rng.choice("p0123456789. x") for _ in range(rng.randint(1, 12)))
        assert (bool(curate.PROBLEM_NUMBER.search(text))
                == any(f"p{i}." in text for i in range(1, 1000))), text
    ok = lambda q, source="x": curate.formatting_ok({"question": q, "source_type": source})
    assert not ok("[asy]draw(A--B);[/asy] Find AB.")
    assert ok("[asy]draw(A--B);[/asy] p1. **3**", "qq8933/AIME_1983_2024")
    assert not ok("See ![Image](x.png)") and not ok("Problem p12. Solve")
    assert not ok("The **bold** run has 2 digits")
    assert ok("The **bold** run has no digit") and ok("Help me with step 3.")
    assert ok("**x** then\nline 2")


def test_reference_answers_and_grading():
    assert curate.reference_answer("So \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert curate.reference_answer("She has 1,200 eggs.\n#### 1,200") == "1200"
    assert curate.reference_answer("Because ...\n\nAnswer: B") == "B"
    assert curate.reference_answer("17") == "17"
    assert curate.reference_answer("A long proof\nover lines.") is None
    assert curate.reference_answer(None) is None
    assert curate.grade_math("#### 1,200", "The total is \\boxed{1200}.") == (True, "ok")
    assert curate.grade_math("\\boxed{\\frac12}", "Answer: 0.5") == (True, "ok")
    assert curate.grade_math("\\boxed{3}", "Answer: 4") == (False, "ok")
    assert curate.grade_math("Explanation.\n\nAnswer: C", "The answer is (C).") == (True, "ok")
    assert curate.grade_math("A proof\nin lines", "x")[0] is None
    assert curate.grade_math("5", None)[0] is None


def test_gpqa_is_skipped_and_said_so_without_a_copy(monkeypatch, capsys):
    monkeypatch.setitem(benchmarks.BENCHMARKS, "gpqa",
                        benchmarks.BENCHMARKS["gpqa"][:3] + ("/nonexistent/gpqa_diamond.jsonl.gz",))
    tests = prepare.eval_questions(["aime24", "gpqa"], {})
    assert list(tests) == ["aime24"] and len(tests["aime24"]) == 30
    assert "skipped GPQA Diamond" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Curation as s1 did it. Each s1 value is written out, its source beside it.

AIMO_2022 = ("Find the number of ordered pairs of positive integers m and n such that m times n "
             "equals 2022 exactly.")
LCB_HARD = ("You are given an array of n integers. Find the length of the longest strictly "
            "increasing contiguous run.")


def hub_only_copies(tmp_path):
    """Local stand-ins for s1's two hub-only decontamination sets, in the hub's columns."""
    aimo = write(tmp_path / "aimo.jsonl", [{"problem": AIMO_2022, "answer": "6"}])
    lcb = write(tmp_path / "lcb.jsonl", [{"question_content": LCB_HARD}])
    return ["--eval-data", "aimo-validation-aime=" + aimo, "--eval-data", "livecodebench-v4=" + lcb]


def test_decontamination_sets_are_s1s_by_default_and_aime25_is_a_flag(tmp_path):
    # s1 data/collect_data.py l. 445-450: AI-MO/aimo-validation-aime (split train, "problem"),
    # Idavidrein/gpqa gpqa_diamond, simplescaling/openaimath test (MATH500),
    # livecodebench/code_generation_lite release_v4
    args = prepare.parse_args(["collect", "--out", "p.jsonl"])
    assert args.eval_sets == ["aimo-validation-aime", "gpqa", "math500", "livecodebench-v4"]
    assert (prepare.HUB_EVAL_SETS["aimo-validation-aime"][:2]
            == ("AI-MO/aimo-validation-aime", "problem"))
    assert prepare.HUB_EVAL_SETS["livecodebench-v4"] == (  # release_v4 = the first four files
        "livecodebench/code_generation_lite", "question_content",  # (cumulative)
        ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl"])
    assert ((benchmarks.BENCHMARKS["math500"][0], benchmarks.BENCHMARKS["math500"][2])
            == ("simplescaling/openaimath", "test"))
    assert benchmarks.BENCHMARKS["gpqa"][:2] == ("Idavidrein/gpqa", "gpqa_diamond")
    assert prepare.parse_args(["collect", "--aime25", "--out", "p"]).eval_sets[-1] == "aime25"

    math500, aime25 = benchmarks.load_benchmark("math500"), benchmarks.load_benchmark("aime25")
    clean = ("A train leaves the station at noon and travels at sixty miles per hour; "
             "where is it at three?")
    records = [{"question": q, "answer": "1"}
               for q in (AIMO_2022, LCB_HARD, math500[0]["prompt"], aime25[0]["prompt"], clean)]
    pool = str(tmp_path / "pool.jsonl")
    collect = ["collect", "--sources", "mine",
               "--local", "mine=" + write(tmp_path / "mine.jsonl", records),
               *hub_only_copies(tmp_path), "--out", pool]
    prepare.main(collect)
    # s1's sets: AIME25 is not among them
    assert [r["question"] for r in read(pool)] == [aime25[0]["prompt"], clean]
    prepare.main(collect + ["--aime25"])
    assert [r["question"] for r in read(pool)] == [clean]


def test_hub_only_sets_load_from_the_cache_offline_or_fail_in_one_line_naming_them(tmp_path,
                                                                                   monkeypatch):
    import datasets
    import huggingface_hub.constants
    # empty caches
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name, hub in (("aimo-validation-aime", "AI-MO/aimo-validation-aime"),
                      ("livecodebench-v4", "livecodebench/code_generation_lite")):
        with pytest.raises(SystemExit) as e:  # the tests run with HF_HUB_OFFLINE=1 (conftest.py)
            prepare.eval_questions([name], {})
        assert hub in str(e.value) and f"--eval-data {name}=PATH" in str(e.value)
        assert "\n" not in str(e.value)
    # cached as hf_hub_download leaves it: read offline, four files, their questions only
    repo = tmp_path / "hub" / "datasets--livecodebench--code_generation_lite"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    for k, f in enumerate(prepare.HUB_EVAL_SETS["livecodebench-v4"][2]):
        write(repo / "snapshots" / ("0" * 40) / f,
              [{"question_content": f"problem {k}", "private_test_cases": "..."}])
    assert (prepare.eval_questions(["livecodebench-v4"], {})
            == {"livecodebench-v4": [f"problem {k}" for k in range(4)]})


def test_aime_is_appended_last_without_decontamination_or_deduplication_as_s1(tmp_path):
    # s1 data/add_aime.py: qq8933/AIME_1983_2024 records of year <= 2022 (l. 7-8) are concatenated
    # to the finished pool (l. 26-34), checked against nothing: AIME 2022 stays though
    # aimo-validation-aime has it
    math = [{"problem": "How many positive divisors does the number 3600 have in total, "
                        "counting 1 and itself?",
             "solution": "\\boxed{45}", "subject": "Number Theory"}]
    aime = [{"ID": "1990-1", "Question": math[0]["problem"], "Answer": 45},  # an earlier source's
            {"ID": "2022-I-5", "Question": AIMO_2022, "Answer": 6},  # in s1's decontamination set
            {"ID": "1995-2", "Question": "Find the last three digits of the product of the first "
                                         "fifteen odd primes.", "Answer": 7},
            {"ID": "2023-I-1", "Question": "A problem from 2023 that s1 did not take into its pool "
                                           "at all.", "Answer": 1}]
    pool = str(tmp_path / "pool.jsonl")
    collect = ["collect", "--sources", "aime", "math",
               "--local", "aime=" + write(tmp_path / "aime.jsonl", aime),
               "--local", "math=" + write(tmp_path / "math.jsonl", math),
               *hub_only_copies(tmp_path), "--out", pool]
    prepare.main(collect)
    records = read(pool)
    # appended last
    assert ([r["question"] for r in records]
            == [math[0]["problem"]] + [a["Question"] for a in aime[:3]])
    assert [r["source_type"] for r in records[1:]] == ["qq8933/AIME_1983_2024"] * 3
    assert records[1]["solution"] == "45"
    # as any other source: the duplicate and the contaminated one go
    prepare.main(collect + ["--check-aime"])
    assert [r["question"] for r in read(pool)] == [aime[0]["Question"], aime[2]["Question"]]


def test_xword_and_scieval_are_subsampled_after_decontamination(tmp_path, capsys):
    # s1 data/collect_data.py l. 459-474: decontaminate, then select_examples_scieval(ds, 250)
    # (l. 420) or ds.shuffle(seed=42) and the first 1000 for XWord (l. 432). One record in five
    # shares an 8-gram with the test set, so picking first would leave about 800 and 200, not 1000
    # and 250.
    fox = "the quick brown fox jumps over the lazy dog"
    test = write(tmp_path / "test.jsonl",
                 [{"question": f"Tell me whether {fox} today.", "answer": "yes"}])
    xword = [{"instruction": "", "output": f"WORD{i}",
              "input": f"### Clue: Sea creature number {i} with eight arms"
                       f"{' and ' + fox if i % 5 == 0 else ''} (7)"}
             for i in range(1500)]
    tasks = ["SocraticQA", "reagent selection", "MedQA", "PubMedQA"]
    scieval = [{"question": f"In case {i} of study {t}, which option"
                            f"{' says ' + fox if i % 5 == 0 else ''} holds?\n\nAnswer:",
                "answer": ["A"], "task_name": t, "category": "Biology", "type": "mc",
                "topic": ("cells", "genes")[i % 2] if t == "SocraticQA" else None}
               for t in tasks for i in range(100)]
    pool = str(tmp_path / "pool.jsonl")
    prepare.main(["collect", "--sources", "scieval", "xword",
                  "--local", "scieval=" + write(tmp_path / "s.jsonl", scieval),
                  "--local", "xword=" + write(tmp_path / "x.jsonl", xword), "--eval-sets", "test",
                  "--eval-data", f"test={test}", "--out", pool])
    records = read(pool)
    picked = [r for r in records if r["source_type"] == "0xharib/xword1"]
    assert len(picked) == 1000 and len(records) - len(picked) == 250
    assert not any(fox in r["question"] for r in records)
    clean = [sources.XWORD + "\n\n" + x["input"].split("### Clue: ")[1]
             for x in xword if fox not in x["input"]]
    order = np.random.default_rng(42).permutation(len(clean))
    assert [r["question"] for r in picked] == [clean[i] for i in order[:1000]]
    out = capsys.readouterr().out
    assert re.search(r"xword\s+1500\s+300\s+0\s+1000  1000 picked of 1200", out)
    assert re.search(r"scieval\s+400\s+80\s+0\s+250  250 picked of 320", out)


def test_s1s_keep_list_is_shipped_with_its_source():
    # s1 data/collect_data.py l. 18-102: TMP_QUESTIONS_TO_KEEP = [63 questions] + [21 questions],
    # 20 of the 21 repeating the first list (the only new one: a PubMedQA abstract on split-liver
    # transplantation)
    with open(sources.KEEP_LIST, encoding="utf-8") as f:
        doc = json.load(f)
    assert "data/collect_data.py" in doc["source"] and "18-102" in doc["source"]
    listed = doc["questions"]
    assert len(listed) == 84 and len(set(listed)) == 64 and sources.kept_by_s1() == set(listed)
    assert listed[0].startswith("During the Northern and Southern Dynasties")
    assert listed[-1].endswith("(E) 3520")
    assert listed[63].startswith("Person A and person B")
    assert listed[67].startswith("To assess and compare the value")
    assert sum(q not in listed[:63] for q in listed[63:]) == 1
    # the second list spells some characters literally where the first escapes them: the same
    # strings
    assert ("Given the complex number $z= \\frac {1}{i(i+1)}$, then $|z|=$ \uff08\u3000\u3000\uff09"
            in listed[63:][9])


def test_fix_gpqa_draws_one_seeded_sequence_so_the_records_order_decides_the_options():
    # s1 data/fix_gpqa.py: random.seed(42) once (l. 7); per GPQA record, in order, random.shuffle
    # of the three wrong answers and the right one (l. 17-24); question = TEMPLATE,
    # solution += "\n\nAnswer: " + letter
    meta = lambda k: str({"Correct Answer": f"right {k}\n",
                          **{f"Incorrect Answer {j}": f"wrong {k}.{j}" for j in (1, 2, 3)}})
    records = [{"question": f"Q{k}", "solution": f"E{k}", "source_type": "Idavidrein/gpqa",
                "metadata": meta(k)} for k in range(6)]

    def s1_fix_gpqa(records):  # written from s1's file, with its global random
        state = random.getstate()
        random.seed(42)
        out = []
        for ex in records:
            m = eval(ex["metadata"])
            choices = [m["Incorrect Answer 1"].strip("\n"), m["Incorrect Answer 2"].strip("\n"),
                       m["Incorrect Answer 3"].strip("\n"), m["Correct Answer"].strip("\n")]
            random.shuffle(choices)
            letter = chr(65 + choices.index(m["Correct Answer"].strip("\n")))
            out.append({"question": "{}\nAnswer Choices:\n(A) {}\n(B) {}\n(C) {}\n(D) {}".format(
                            ex["question"], *choices),
                        "solution": ex["solution"] + "\n\n" + "Answer: " + letter})
        random.setstate(state)
        return out

    ours = sources.fix_gpqa([dict(r) for r in records])
    assert [{k: r[k] for k in ("question", "solution")} for r in ours] == s1_fix_gpqa(records)
    backwards = {r["question"].split("\n")[0]: r["question"]
                 for r in sources.fix_gpqa([dict(r) for r in records[::-1]])}
    # the same records, reordered
    assert sum(backwards[r["question"].split("\n")[0]] != r["question"] for r in ours) >= 3


KEPT_SCIEVAL = ("What is compartmentalization of a cell?\n\nA. Cell compartmentalization\n"
                "B. Cell communication\nC. Cell division\nD. Cell fusion")
KEPT_NUMINA = ("Given four lines such that any three of them determine a triangle, prove that "
               "the orthocenters of these four triangles are collinear.")


def test_listed_questions_pass_numinamath_scieval_and_xword_filters(tmp_path, monkeypatch):
    assert KEPT_SCIEVAL in sources.kept_by_s1() and KEPT_NUMINA in sources.kept_by_s1()
    # NuminaMath (l. 133-141): every aops_forum record; of the rest, numinamath_500's and the
    # listed ones
    monkeypatch.setattr(sources, "numina_500",
                        lambda: {"A problem on numinamath_500's list, with enough words to check."})
    numina = [{"problem": q, "solution": "s", "source": src, "messages": []} for q, src in (
        ("An aops_forum problem about the sum of the first hundred odd numbers, squared.",
         "aops_forum"),
        ("A problem on numinamath_500's list, with enough words to check.", "cn_k12"),
        (KEPT_NUMINA, "olympiads"),
        ("A cn_k12 problem on neither list about the area of a triangle with sides three four "
         "five.", "cn_k12"))]
    # SciEval (l. 355-383): the listed records plus 250 less their number, picked by the walk
    tasks = ["SocraticQA", "reagent selection", "MedQA", "PubMedQA"]
    scieval = [{"question": f"In case {i} of study {t}, which option holds best of all?\n\nAnswer:",
                "answer": ["A"], "task_name": t, "category": "Biology", "type": "mc",
                "topic": ("cells", "genes")[i % 2] if t == "SocraticQA" else None}
               for t in tasks for i in range(100)]
    # cleaned as s1 does, then matched
    scieval[5] = dict(scieval[5], question=KEPT_SCIEVAL + "\n\nAnswer:")
    pool = str(tmp_path / "pool.jsonl")
    prepare.main(["collect", "--sources", "numinamath", "scieval",
                  "--local", "numinamath=" + write(tmp_path / "n.jsonl", numina),
                  "--local", "scieval=" + write(tmp_path / "s.jsonl", scieval),
                  "--eval-sets", "math500", "--out", pool])
    records = read(pool)
    assert [r["question"] for r in records[:3]] == [numina[k]["problem"] for k in range(3)]
    sci = [r["question"] for r in records if r["source_type"].startswith("OpenDFM/SciEval")]
    assert len(sci) == 250 and sci[-1] == KEPT_SCIEVAL and sci.count(KEPT_SCIEVAL) == 1
    # XWord (l. 469-474): shuffle(seed=42), the first 1,000 less the listed, then the listed. No
    # listed question is a crossword clue, so the rule is checked with a list of our own
    clue = lambda i: sources.XWORD + "\n\n" + f"Sea creature number {i} with eight arms (7)"
    xword = [{"instruction": "", "output": "OCTOPUS",
              "input": f"### Clue: Sea creature number {i} with eight arms (7)"}
             for i in range(1500)]
    order = np.random.default_rng(42).permutation(1500)
    late = [int(i) for i in order[1200:1203]]  # far past the first 1,000 of the shuffle
    monkeypatch.setattr(sources, "kept_by_s1", lambda: frozenset(clue(i) for i in late))
    prepare.main(["collect", "--sources", "xword",
                  "--local", "xword=" + write(tmp_path / "x.jsonl", xword),
                  "--eval-sets", "math500", "--out", pool])
    assert ([r["question"] for r in read(pool)]
            == [clue(int(i)) for i in order[:997]] + [clue(i) for i in late])


def featurized_records(tmp_path, models, grader, *extra):
    """curate.py features on six hand-made distilled records, each tripping one rule of stage 1a
    or 1b."""
    ok = dict(distill_status="ok", thinking="abc", attempt="51", source_type="planted",
              cot_type="math", metadata="{}")
    records = [dict(ok, question="Prove that there are infinitely many primes.",
                    solution="Suppose there were finitely many.\n"
                             "Their product plus one has a new prime factor."),
               dict(ok, question="What is 17 times 3?", solution="\\boxed{51}"),
               dict(ok, question="Prove that the square root of two is irrational.", solution=None),
               dict(ok, question="What is 50 plus 1?", solution="51", distill_status="error",
                    thinking=None, attempt=None),
               dict(ok, question="[asy] draw((0,0)--(3,4)); [/asy] How long is the segment?",
                    solution="5"),
               dict(ok, question="p3. What is the smallest prime above fifty?", solution="53")]
    data, out = write(tmp_path / "d.jsonl", records), str(tmp_path / f"f_{grader}.jsonl")
    curate.main(["features", "--data", data, "--solvers", "--tokenizer", models["tok"],
                 "--classifier", "none", "--grader", grader, "--out", out, *extra])
    return records, out


def test_stage_1a_and_1b_count_each_rule_and_the_llm_grader_keeps_proofs(models, tmp_path, capsys):
    records, featurized = featurized_records(tmp_path, models, "math")
    curate.main(["select", "--data", featurized, "--n", "10",
                 "--out", str(tmp_path / "math.jsonl")])
    out = capsys.readouterr().out
    assert stage_counts(out)["1a"] == 3 and stage_counts(out)["1b"] == 1
    for rule in ("no trace", "no reference solution",  # 1a, s1 filter.ipynb cell 4
                 "no grade: no short reference answer",
                 "[asy] figure, not from AIME", '"p<N>." numbering'):  # 1b, cell 7
        assert re.search(rf"^      - {re.escape(rule)} +1\b", out, re.M), rule
    assert "features --grader llm" in out
    assert [r["question"] for r in read(tmp_path / "math.jsonl")] == [records[1]["question"]]

    # s1's Claude graded the proof (data/featurization.py l. 65-71); an LLM grader with s1's prompt
    # keeps it
    server, url, seen = stub_server([reply(content="The attempt proves it.\nYes")])
    _, featurized = featurized_records(tmp_path, models, "llm", "--llm-model", "judge",
                                       "--base-url", url)
    server.shutdown()
    assert seen and all(body["messages"][0]["content"] == curate.GRADING_PROMPT for _, body in seen)
    curate.main(["select", "--data", featurized, "--n", "10",
                 "--out", str(tmp_path / "llm.jsonl")])
    out = capsys.readouterr().out
    assert stage_counts(out)["1a"] == 4 and "no short reference answer" not in out
    # no reference: no grade, in s1 too (l. 56-63)
    assert re.search(r"^      - no reference solution +1\b", out, re.M)
    assert (sorted(r["question"] for r in read(tmp_path / "llm.jsonl"))
            == sorted(r["question"] for r in records[:2]))


def test_bad_input_is_a_one_line_error_naming_it(tmp_path):
    bad = write(tmp_path / "bad.jsonl",
                [{"question": "fine?", "answer": "1"}, {"prompt": "no question here"}])
    with pytest.raises(SystemExit, match=r"bad.jsonl record 1: no question"):
        prepare.main(["collect", "--sources", "mine", "--local", f"mine={bad}",
                      "--eval-sets", "aime24", "--out", str(tmp_path / "p.jsonl")])
    with pytest.raises(SystemExit, match=r"missing.jsonl: no such file"):
        prepare.main(["distill", "--pool", str(tmp_path / "missing.jsonl"), "--teacher", "mini",
                      "--out", "x.jsonl"])
    with pytest.raises(SystemExit, match="run `curate.py features` first"):
        curate.main(["select", "--data", GSM8K, "--out", str(tmp_path / "s.jsonl")])
    with pytest.raises(SystemExit,
                       match=r"bad.jsonl record 1: needs a non-empty string 'question'"):
        curate.main(["features", "--data", bad, "--classifier", "none",
                     "--out", str(tmp_path / "f.jsonl")])
    with pytest.raises(SystemExit, match="not one of"):
        prepare.main(["collect", "--sources", "nosuch", "--eval-sets", "aime24",
                      "--out", str(tmp_path / "p.jsonl")])
    # the mini teacher cannot read these: marked
    pool = write(tmp_path / "pool.jsonl", read(GSM8K)[:2])
    prepare.main(["distill", "--pool", pool, "--teacher", "mini",
                  "--out", str(tmp_path / "d.jsonl")])
    assert [r["distill_status"] for r in read(tmp_path / "d.jsonl")] == ["malformed"] * 2


def test_help():
    for script, sub in (("prepare.py", "collect"), ("curate.py", "select")):
        text = run([sys.executable, script, sub, "--help"]).stdout
        assert "--out" in text and ("--local" in text or "--uniform-until" in text)
        assert "Where we differ from s1, and why:" in text  # said where it is used
    for argv in (["distill", "--help"],):
        with pytest.raises(SystemExit) as e:
            prepare.parse_args(argv)
        assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        curate.parse_args(["features", "--help"])
    assert e.value.code == 0


def read_search_trace(question, thinking, answer):
    """An independent reading of a search trace: (letters checked, go-ons, rechecks, gave up,
    stopped mid-line). Asserts that each line is the letter checked before it (none on the first
    line) and the next letter of the question's list, then "yes" exactly when that letter comes
    after the target, except that the last line may stop before its verdict; that a "Wait"
    follows only a GIVE_UP_AFTER-th "no" (then the search goes on) or a "yes" (then the letter
    found, alone, is checked again); and that the answer is the "yes" letter, or after a give-up
    or a stop the last letter checked."""
    letters, target = re.fullmatch(r"Which of ([a-z]+) is after ([a-z])\?", question).groups()
    assert [c > target for c in letters].count(True) == 1
    checked, go_ons, rechecks, lines = [], 0, 0, thinking.split("\n")
    midline = re.fullmatch(r"[a-z]{2}", lines[-1]) is not None  # named the next letter, not checked
    if midline:
        named = lines.pop()
        assert checked == [] and len(lines) > 0
    for i, line in enumerate(lines):
        if line == "Wait":
            if lines[i - 1].endswith(" yes"):
                assert lines[i + 1] == checked[-1] + " yes"
                rechecks += 1
            else:
                assert len(checked) % mini.GIVE_UP_AFTER == 0 and lines[i - 1].endswith(" no")
                go_ons += 1
            continue
        if i > 0 and lines[i - 1] == "Wait" and lines[i - 2].endswith(" yes"):
            continue  # a recheck
        letter = letters[len(checked)]
        assert line == "".join(checked[-1:]) + letter + (" yes" if letter > target else " no"), (
            question, thinking)
        checked.append(letter)
    if midline:
        assert named == checked[-1] + letters[len(checked)] and answer == checked[-1]
        return checked, go_ons, rechecks, True, True
    gave_up = lines[-1].endswith(" no")
    assert answer == checked[-1] and (gave_up or answer > target)
    return checked, go_ons, rechecks, gave_up, False


def test_mini_search_teacher_stops_too_soon_by_its_rule_and_goes_on_after_wait():
    # seeded
    assert mini.rows(400, 0, 1, 9) == mini.rows(400, 0, 1, 9) != mini.rows(400, 1, 1, 9)
    for not_one in ("What is the capital of France?", "Which of yz is after m?"):
        with pytest.raises(ValueError):
            mini.solve(not_one)
    records = mini.rows(10000, 0, 1, 12)
    give_ups = go_ons = finds = rechecks = stops = chances_to_stop = midline_stops = 0
    lines_named = 0
    for r in records:
        thinking, answer = mini.teacher(r["question"], 0)
        assert (thinking, answer) == mini.teacher(r["question"], 0)  # seeded by the question
        # the words a cap forces: a capped model has seen them
        forced = chat.FINAL_ANSWER.split("\n")[-1]
        assert answer.startswith(forced + " ")
        answer = answer.removeprefix(forced + " ")
        checked, go_on, recheck, gave_up, midline = read_search_trace(r["question"], thinking,
                                                                      answer)
        assert (answer == r["answer"]) == (not gave_up)
        # every letter after the first is named, then checked unless the teacher stops in between
        midline_stops += midline
        lines_named += len(checked) - 1 + midline
        # else it stopped anywhere
        at_rule = gave_up and not midline and len(checked) % mini.GIVE_UP_AFTER == 0
        noes = len(checked) - (not gave_up)
        give_ups, go_ons = give_ups + at_rule, go_ons + go_on
        finds, rechecks = finds + (not gave_up), rechecks + recheck
        stops += gave_up and not at_rule and not midline
        # a mid-line stop comes after no "no"
        chances_to_stop += noes - noes // mini.GIVE_UP_AFTER - midline
    # every GIVE_UP_AFTER-th "no" is a give-up or a go-on; any other "no" is a stop at STOP_RATE; a
    # "yes" is rechecked again and again at RECHECK_RATE
    assert abs(go_ons / (go_ons + give_ups) - mini.GO_ON_RATE) < 0.03
    assert abs(stops / chances_to_stop - mini.STOP_RATE) < 0.01
    assert abs(midline_stops / lines_named - mini.MIDLINE_STOP_RATE) < 0.01
    assert abs(rechecks / (finds + rechecks) - mini.RECHECK_RATE) < 0.03
