"""eval.py: the paper's metrics, the settings, and whole runs (a stand-in decoder in process, then
the real sample.py with a tiny model)."""
import json
import os
import sys
import types

import pytest
import torch
from conftest import ROOT, run, tiny_hf_model

import eval as E
import sample
from sample import Setting
from machinery import benchmarks, chat, hf_checkpoint


def respond(answer, thinking="Let me think. 1+1 = 2, \\boxed{999} is a guess."):
    """A generated text as sample.py returns it: thinking, the answer header, the answer,
    <|im_end|>."""
    return f"\n{thinking}\n{chat.ANSWER}\n{answer}{chat.IM_END}"

# ----------------------------------------------------------------------------------------------
# The paper's metrics

AIME24_BF = [(500, 0.0), (1000, 13.3), (2000, 30.0), (3933, 43.3), (5300, 50.0), (6657, 53.3),
             (7319, 56.7)]
# caps 500..4000, then auto (no cap, 2x and 4x Wait)
CAPS = [500, 1000, 2000, 4000, 32768, 32768, 32768]


def test_scaling_metrics_reproduce_the_published_budget_forcing_row():
    """The paper's Figure 1 AIME24 points (read off s1's visuals/scaling.pdf) and its budget-forcing
    row in the table of test-time scaling methods: Control 100 %, Scaling 15, Performance 56.7."""
    m = E.scaling_metrics([(a, f, 0, cap) for (a, f), cap in zip(AIME24_BF, CAPS)])
    assert m["control"] == 1.0 and m["performance"] == 56.7
    assert round(m["scaling"]) == 15
    # the published rejection-sampling runs (s1's visuals/rejection_stretched.pdf) show inverse
    # scaling: -35
    rs = [(3703, 36.7), (4344, 33.3), (4734, 30.0), (5193, 26.7), (5293, 23.3)]
    assert abs(E.scaling_metrics([(a, f, 0, 32768) for a, f in rs])["scaling"] + 35) < 1
    # a run whose average exceeds its cap does not respect the budget
    assert E.scaling_metrics([(500, 10, 0, 400), (900, 20, 0, 1000)])["control"] == 0.5


def make_sample(qid, i, extracted, correct, where="boxed", **kw):
    return {"id": qid, "sample": i, "extracted": extracted, "extracted_from": where,
            "correct": correct, "status": "ok" if extracted is not None else "no answer",
            "thinking_tokens": 10 * (i + 1), "answer_tokens": 5, "ended": "natural",
            "finished": True, "text": respond(f"\\boxed{{{extracted}}}"), **kw}


def test_avg_maj_pass_at_n():
    # right answers vote together
    q1 = [make_sample("1", 0, "0.5", True), make_sample("1", 1, "\\frac{2}{3}", False),
          make_sample("1", 2, "\\frac{1}{2}", True), make_sample("1", 3, None, False)]
    # 2-2 tie: the first seen (3) wins
    q2 = [make_sample("2", 0, "3", False), make_sample("2", 1, "7", True),
          make_sample("2", 2, "03", False), make_sample("2", 3, "7", True)]
    r = E.summarize("math500", "auto", [q1, q2], (0, 32768, "tokens"))
    assert r["accuracy"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert r["accuracy_se"] == pytest.approx(0.0)
    assert r["maj"] == 0.5 and r["maj_se"] == pytest.approx(0.5)  # 1 and 0: stdev 0.707 / sqrt 2
    assert r["pass"] == 1.0 and r["failures"] == {"no answer": ["1"]}
    letters = [make_sample("g", 0, "B", False), make_sample("g", 1, "C", True),
               make_sample("g", 2, "B", False)]
    assert not E.majority_correct("gpqa", letters) and E.majority_correct("gpqa", letters[1:2])


def test_paired_standard_error_against_numpy():
    """Per-question verdicts of two runs on the same 12 questions: the paired SE is the SE of the
    mean of the per-question differences, not the two runs' SEs combined as if independent."""
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
    gains = E.extension_gains({("mini", "nocap"): nocap, ("mini", "wait1"): wait,
                               ("mini", "8"): nocap, ("mini", "8+wait1"): nocap,
                               ("math500", "auto"): wait, ("math500", "wait2"): nocap})
    assert [(g["benchmark"], g["setting"], g["against"]) for g in gains] == [
        ("mini", "wait1", "nocap"), ("mini", "8+wait1", "8"), ("math500", "wait2", "auto")]
    assert (gains[0]["difference"], gains[0]["se"]) == (diff, se) and gains[1]["difference"] == 0
    assert gains[2]["difference"] == pytest.approx(-d.mean())


def test_sample_stats_count_caps_context_and_missing_answers():
    samples = [make_sample("1", 0, "1", True, ended="capped"),
               make_sample("2", 1, "2", True, ended="length", finished=False),
               make_sample("3", 2, None, False, text=respond("I give up"))]
    s = E.sample_stats(samples)
    thinking = (s["avg_thinking_tokens"], s["min_thinking_tokens"], s["max_thinking_tokens"])
    assert thinking == (20, 10, 30)
    counts = (s["hit_cap"], s["out_of_context"], s["no_answer_or_boxed"], s["unfinished"])
    assert counts == (1, 1, 1, 1)


def test_default_sweep_is_s1s_grid():
    """s1 eval/commands.sh l. 25-31: max_tokens_thinking=500, 1000, 2000, 4000, 8000, 16000, auto;
    l. 32-35: max_tokens_thinking=auto with thinking_n_ignore=1, 2, 4, 6 and
    thinking_n_ignore_str=Wait."""
    caps = [500, 1000, 2000, 4000, 8000, 16000, "auto"]
    waits = [1, 2, 4, 6]
    settings = [E.parse_setting(s)[1] for s in E.parse_args(["--settings", "sweep"]).settings]
    assert settings == ([Setting(c) for c in caps] + [Setting("auto", k) for k in waits])
    assert E.parse_args([]).ignore_str == "Wait"  # waitK appends --ignore-str
    # l. 31, 38-40, 33: auto; ignored twice with no string, "Hmm", "Alternatively"; and "Wait"
    ablation = [E.parse_setting(s)[1] for s in E.parse_args(["--settings", "ablation"]).settings]
    assert ablation == [Setting("auto")] + [Setting("auto", 2, s)
                                            for s in ("", "Hmm", "Alternatively")] + [
        Setting("auto", 2)]


def test_settings():
    assert E.parse_setting("512") == ("512", Setting(512))
    assert E.parse_setting("auto") == ("auto", Setting("auto"))
    assert E.parse_setting("nocap") == ("nocap", Setting(None))
    # nottc is no thinking phase at all, not thinking without a cap: its own setting
    assert E.parse_setting("none") == ("none", Setting(None, think=False))
    assert E.parse_setting("Wait2") == E.parse_setting("auto+wait2") == ("wait2",
                                                                        Setting("auto", 2))
    assert E.parse_setting("4096+wait1") == ("4096+wait1", Setting(4096, 1))
    assert E.parse_setting("ignore2") == ("ignore2", Setting("auto", 2, ""))
    assert E.parse_setting("Ignore2:Hmm") == ("ignore2:Hmm", Setting("auto", 2, "Hmm"))
    assert E.parse_setting("nocap+ignore1:Alternatively") == (
        "nocap+ignore1:Alternatively", Setting(None, 1, "Alternatively"))
    # the paper's Table 3 methods (s1 eval/commands.sh l. 43-89)
    assert E.parse_setting("tokens2048") == ("tokens2048", Setting(
        "auto", control="tokens", control_value=2048))
    assert E.parse_setting("2048+tokens2048")[1] == Setting(2048, control="tokens",
                                                            control_value=2048)
    assert E.parse_setting("steps16+bf") == ("steps16+bf", Setting(
        "auto", control="steps", control_value=16, step_forcing=True))
    assert E.parse_setting("short")[1] == Setting("auto", control="short")
    assert E.parse_setting("reject3500") == ("reject3500", Setting(
        3500, tries=sample.MAX_TRIES, own_temperature=1.0))
    assert E.parse_setting("reject8x5")[1].tries == 5
    assert E.parse_setting("min500") == ("min500", Setting("auto", min_thinking_tokens=500))
    assert E.parse_setting("nocap+min_thinking_tokens=7")[1] == Setting(None,
                                                                       min_thinking_tokens=7)
    methods = {label: E.method_of(E.parse_setting(label)[1]) for label in E.TABLE3}
    assert sorted(set(methods.values())) == [
        "budget forcing", "class-conditional", "rejection sampling", "step-conditional",
        "step-conditional + budget forcing", "token-conditional",
        "token-conditional + budget forcing"]
    assert [m for m in methods.values()].count("rejection sampling") == 6
    assert E.parse_setting("0500")[0] == "500"
    # each "Wait" run against the same setting without its extension
    gains = E.extension_gains({("b", s): [1, 0] if "wait" in s else [0, 0] for s in (
        "wait2+tokens2048", "tokens2048", "4000+wait1", "4000", "wait1", "nocap")})
    assert [(g["setting"], g["against"]) for g in gains] == [
        ("wait2+tokens2048", "tokens2048"), ("4000+wait1", "4000"), ("wait1", "nocap")]
    # class-conditional control is measured against the auto run, and unknown without one
    run = lambda setting, tokens, control=None: {
        "setting": setting, "method": E.method_of(E.parse_setting(setting)[1]),
        "control": control, "avg_thinking_tokens": tokens, "accuracy": 0.5, "avg_steps": 0,
        "budget": list(E.budget_of(E.parse_setting(setting)[1], 1000))}
    ccc = [run("short", 500, "short"), run("long", 300, "long")]
    assert E.method_metrics(ccc + [run("auto", 400)])["class-conditional"]["control"] == 0.0
    assert E.method_metrics(ccc)["class-conditional"]["control"] is None
    for bad in ("abc", "0", "512+hmm", "-5", "wait2:Hmm", "ignore2:", "none+wait1", "none:x",
                "nottc", "500:Hmm", "wait0", "500+ignore0", "bf", "tokens0", "500+reject8",
                "steps4+wait1", "colour=red", "500+600", "num_ignore=4+wait2",
                "500+max_thinking_tokens=1000", "tokens2048+tokens4096", "control=[1]"):
        with pytest.raises(ValueError, match="setting"):
            E.parse_setting(bad)
    assert E.parse_args(["--settings", "sweep", "auto"]).settings == E.SWEEP
    for argv in (["--settings", "lots"], ["--n", "4"], ["--data", "mmlu=x.jsonl"],
                 ["--settings", "500+tries=3"]):  # greedy retries would all be the same
        with pytest.raises(SystemExit):
            E.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Whole runs

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Qwen2 with a byte-level tokenizer, as tests/conftest.py's tiny_sft builds
    it."""
    path = tmp_path_factory.mktemp("eval_model") / "model"
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(path)
    chat.build_byte_tokenizer(str(path))
    return str(path)


def test_a_run_with_a_stand_in_decoder_grades_reports_and_resumes(tmp_path, tiny_model,
                                                                   monkeypatch):
    """The pipeline around sample.generate: a stand-in answers question k right when k is even and
    thinks 100 tokens per Wait. Checks the numbers in results.json, the files, and that a rerun
    generates nothing."""
    calls, seeds = [], []

    def generate(model, tokenizer, questions, settings, n=1, on_result=None, **kw):
        forcing = tuple((s.max_thinking_tokens, s.num_ignore) for s in settings)
        calls.append((len(questions), forcing, n, kw["max_tokens"]))
        seeds.append(kw["seed"])
        out = []
        for question in questions:
            k = next(i for i, q in enumerate(math500) if q["prompt"] == question)
            answer = f"\\boxed{{{math500[k]['gold']}}}" if k % 2 == 0 else "I am not sure."
            for _ in range(n):
                for s in settings:
                    out.append({"prompt": chat.prompt_text(question), "text": respond(answer),
                                "answer": answer, "thinking_tokens": 100 * (1 + s.num_ignore),
                                "answer_tokens": 7, "ended": "natural",
                                "forced": [{"at": 100, "what": "Wait"}] * s.num_ignore,
                                "finished": True})
                    on_result(len(out) - 1, out[-1])
        return out

    math500 = benchmarks.load_benchmark("math500", limit=6)
    def load_for_generation(name, device, dtype, max_tokens, rows, tokenizer=None, timeout_min=60,
                            tp=None):
        return (hf_checkpoint.from_pretrained(name, dtype=getattr(torch, dtype)),
                chat.load_tokenizer(tokenizer or name), 1, 0)

    monkeypatch.setitem(sys.modules, "sample", types.SimpleNamespace(**{
        **vars(sample), "generate": generate, "load_for_generation": load_for_generation}))
    out = tmp_path / "run"
    argv = ["--model", tiny_model, "--benchmarks", "math500", "--limit", "6", "--settings", "wait1",
            "auto", "--batch-size", "4", "--device", "cpu", "--dtype", "float32", "--report",
            "results", "--out", str(out)]
    runs, scaling = E.main(argv)
    # every setting of every question in one run
    assert calls == [(6, (("auto", 1), ("auto", 0)), 1, 32768)]
    assert [r["accuracy"] for r in runs] == [0.5, 0.5]
    # named, not swallowed
    assert [r["failures"] for r in runs] == [{"unparsed": [q["id"] for q in math500[1::2]]}] * 2
    assert [r["avg_thinking_tokens"] for r in runs] == [200, 100]
    bf = scaling["math500"]["budget forcing"]
    assert bf["scaling"] == 0.0 and bf["control"] == 1.0
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert len(records) == 12 and {"prompt", "thinking_tokens", "answer_tokens", "forced",
                                    "extracted", "correct", "status"} <= set(records[0])
    assert json.load(open(out / "results.json"))["runs"][0]["accuracy"] == 0.5
    assert "| math500 | wait1 | 6 | 50.0 ± 22.4 |" in (out / "results.md").read_text()
    assert (out / "results_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a kill mid-write leaves half a line: the rerun drops it (the file is clean again) and
    # generates
    # nothing; a sample missing from the file is generated again, alone
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"benchmark": "math500", "setting": "auto", "id": "x"')
    calls.clear()
    E.main(argv)
    assert calls == [] and [json.loads(line) for line in open(out / "samples.jsonl")] == records
    config = json.load(open(out / "eval_config.json"))
    assert config["gpqa_seed"] == 0
    del config["gpqa_seed"]  # an --out from before --gpqa-seed goes on as seed 0
    (out / "eval_config.json").write_text(json.dumps(config))
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    E.main(argv)
    assert calls == [(1, (("auto", 0),), 1, 32768)]
    # a prompt that cannot fit the context is named before anything runs
    with pytest.raises(SystemExit, match="math500 question test/precalculus/807.json: the prompt "
                                         "has 264 tokens, --max-tokens is 100"):
        E.main(argv[:-1] + [str(tmp_path / "short"), "--max-tokens", "100"])
    # samples made with other generation settings are never mixed in
    with pytest.raises(SystemExit, match="temperature"):
        E.main(argv + ["--temperature", "0.6", "--n", "2"])
    # --n 2: both samples of every question in the same run (sample.py gives each its own draws)
    calls.clear(), seeds.clear()
    runs, _ = E.main(argv[:-1] + [str(tmp_path / "n2"), "--temperature", "0.6", "--n", "2"])
    assert calls == [(6, (("auto", 1), ("auto", 0)), 2, 32768)]
    assert runs[0]["samples_per_question"] == 2
    assert "| math500 | wait1 | 6 | 50.0 ± 22.4 | 50.0 ± 22.4 | 50.0 ± 22.4 |" in (
        tmp_path / "n2" / "results.md").read_text()


def test_sweep_with_a_tiny_model_writes_table_samples_and_plot(tmp_path, tiny_model):
    """eval.py end to end with the real sample.py: two tiny budgets on two benchmarks."""
    try:
        import sample  # noqa: F401
    except ImportError:
        pytest.skip("sample.py not written yet")
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "--model", tiny_model,
           "--benchmarks", "aime25", "math500", "--limit", "1", "--settings", "8", "16",
           "--max-tokens", "400", "--device", "cpu", "--dtype", "float32", "--out", str(out)]
    proc = run(cmd)
    records = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert len(records) == 4 and {(r["benchmark"], r["setting"]) for r in records} == {
        (b, s) for b in ("aime25", "math500") for s in ("8", "16")}
    assert all(r["thinking_tokens"] <= int(r["setting"]) for r in records)
    table = (out / "results_8-16.md").read_text()  # the report is named after the run
    assert "| aime25 | 8 | 1 |" in table and "| math500 | 16 | 1 |" in table
    assert "| aime25 | budget forcing | 2 |" in table
    assert (out / "results_8-16_scaling.png").stat().st_size > 1000
    again = run(cmd)
    assert "4 of 4 samples already" in again.stdout, proc.stdout
    assert "generating 0" in again.stdout, proc.stdout


def test_four_processes_as_tp_2_x_dp_2_equal_one_and_resume_a_stopped_run(tmp_path, tiny_model):
    """torchrun's 4 processes as 2 replicas of 2 tensor-parallel ranks give one process's samples
    (sampled, n = 2: every draw depends on the seed, question and sample alone) and its report.
    They resume a stopped run: rows in samples.jsonl, and more in replica 0's part file; every
    other row is written once, in the run's order (benchmark, setting, sample, question)."""
    argv = ["--model", tiny_model, "--benchmarks", "aime25", "math500", "--limit", "2",
            "--settings", "8", "16+wait1", "--n", "2", "--temperature", "0.7",
            "--max-tokens", "600", "--device", "cpu", "--dtype", "float32", "--report", "results"]
    E.main(argv + ["--out", str(tmp_path / "one")])
    one = [json.loads(line) for line in open(tmp_path / "one" / "samples.jsonl")]
    key = lambda r: (r["benchmark"], r["setting"], r["id"], r["sample"])
    assert len(one) == 16 and len({r["text"] for r in one}) == 16
    four = tmp_path / "four"
    four.mkdir()
    (four / "eval_config.json").write_text((tmp_path / "one" / "eval_config.json").read_text())
    lines = [json.dumps(r) + "\n" for r in one]
    (four / "samples.jsonl").write_text("".join(lines[:3]))
    (four / "samples.jsonl.part0").write_text("".join(lines[3:5]) + '{"benchmark": "ai')
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
                "--nproc-per-node", "4", "--"]  # "--": torchrun would take --n for one of its own
    out = run(torchrun + [os.path.join(ROOT, "eval.py"), *argv, "--tp", "2", "--out", str(four)])
    assert out.stdout.count("5 of 16 samples already") == 1  # rank 0's
    rows = [json.loads(line) for line in open(four / "samples.jsonl")]
    assert sorted(rows, key=key) == sorted(one, key=key)
    ids = {b: [q["id"] for q in benchmarks.load_benchmark(b, None, 2)]
           for b in ("aime25", "math500")}
    order = [(b, s, q, i) for b in ids for s in ("8", "16+wait1") for i in (0, 1) for q in ids[b]]
    assert [key(r) for r in rows[5:]] == [k for k in order if k not in map(key, one[:5])]
    assert (four / "results.md").read_text() == (tmp_path / "one" / "results.md").read_text()
    assert sorted(os.listdir(four)) == ["eval_config.json", "results.json", "results.md",
                                        "results_parallel.png", "results_scaling.png",
                                        "samples.jsonl"]


def test_a_model_retrained_at_the_same_path_is_refused_not_scored_from_old_samples(tmp_path,
                                                                                   tiny_model):
    """Samples are keyed on the weights that made them (the sha256 of the safetensors, as
    `sha256sum` prints it), not on the model's path: retraining into the same directory and
    rerunning eval.py stops in one line naming the weights instead of reporting the old model's
    samples."""
    import shutil
    import subprocess
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    argv = ["--model", str(model), "--benchmarks", "aime25", "--limit", "1", "--settings", "8",
            "--max-tokens", "300", "--device", "cpu", "--dtype", "float32",
            "--out", str(tmp_path / "run")]
    E.main(argv)
    sha = subprocess.run(["sha256sum", str(model / "model.safetensors")], capture_output=True,
                         text=True).stdout.split()[0]
    assert json.load(open(tmp_path / "run" / "eval_config.json"))["weights"] == sha
    # touched, same bytes: hashed again, same weights, resumed
    os.utime(model / "model.safetensors")
    E.main(argv)
    retrained = tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=1)
    retrained.save_pretrained(model)
    with pytest.raises(SystemExit, match=f"eval_config.json: made with weights '{sha}' "
                                         "\\(now '[0-9a-f]{64}'\\)"):
        E.main(argv)


def test_none_is_s1s_nottc_no_thinking_prefix(tmp_path, tiny_model, monkeypatch):
    """"none" (s1's nottc, commands.sh l. 22) is a Setting with think=False: its prompt ends at
    "<|im_start|>assistant\n", with no "<|im_start|>think" and nothing forced; the other settings
    of the same questions, in the same sample.generate call, keep the thinking prefix. The real
    sample.py."""
    import sample
    calls, real = [], sample.generate
    monkeypatch.setattr(sample, "generate", lambda *a, **kw: calls.append(
        kw["settings"]) or real(*a, **kw))
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "question": "2+3?", "answer": "5"}\n'
                    '{"id": "b", "question": "1+1?", "answer": "2"}\n')
    out = tmp_path / "run"
    E.main(["--model", tiny_model, "--benchmarks", "mine", "--data", f"mine={path}", "--settings",
            "none", "4", "--max-tokens", "120", "--device", "cpu", "--out", str(out)])
    assert calls == [[Setting(None, think=False), Setting(4)]]
    records = {(r["setting"], r["id"]): r for r in map(json.loads, open(out / "samples.jsonl"))}
    for qid, question in (("a", "2+3?"), ("b", "1+1?")):
        none, capped = records[("none", qid)], records[("4", qid)]
        assert none["prompt"] == chat.prompt_text(question) and chat.THINK not in none["prompt"]
        assert none["forced"] == [] and none["thinking_tokens"] == 0
        assert capped["prompt"] == chat.prompt_text(question) + chat.THINK
        assert capped["thinking_tokens"] <= 4
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
    E.main(["--model", "bigram", "--benchmarks", "mine", "--data", f"mine={path}", "--settings",
            "wait1", "ignore1:Hmm", "ignore1", "--max-tokens", "400", "--device", "cpu",
            "--out", str(tmp_path / "run")])
    records = {r["setting"]: r for r in map(json.loads, open(tmp_path / "run" / "samples.jsonl"))}
    assert {s: r["forced"][0]["what"] for s, r in records.items()} == {
        "wait1": "Wait", "ignore1:Hmm": "Hmm", "ignore1": ""}
    assert records["wait1"]["text"].startswith("abcWaitabc<|im_start|>answer")
    assert records["ignore1:Hmm"]["text"].startswith("abcHmm")
    assert records["ignore1"]["text"].startswith("abc")


def test_a_benchmark_of_ones_own_from_a_local_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "question": "What is 2+3?", "answer": "5"}\n'
                    '{"id": "b", "question": "Q", "answer": "007"}\n')
    qs = benchmarks.load_benchmark("mine", str(path))
    assert [(q["id"], q["prompt"], q["gold"]) for q in qs] == [("a", "What is 2+3?", "5"),
                                                               ("b", "Q", "7")]
    args = E.parse_args(["--benchmarks", "mine", "--data", f"mine={path}"])
    assert args.data == {"mine": str(path)}
    with pytest.raises(SystemExit):
        E.parse_args(["--benchmarks", "mine"])  # no source for it


def test_table3_methods_and_parallel_scaling_in_one_run(tmp_path, bigram, monkeypatch):
    """Each method of the paper's Table 3 gets its own Control, Scaling and Performance; --n 4
    reports maj@k and pass@k for k = 1, 2, 4 with the thinking tokens the k samples spend in all,
    and draws Figure 4's plot; rejection sampling reports its tries. The real sample.py on the
    bigram model that thinks "abc" and answers 7."""
    import sample
    model, tokenizer = bigram
    monkeypatch.setattr(sample, "load_for_generation", lambda *a, **kw: (model, tokenizer, 1, 0))
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "question": f"q{i}", "answer": "7"}) + "\n"
                            for i in range(3)))
    out = tmp_path / "run"
    argv = ["--model", "bigram", "--benchmarks", "mine", "--data", f"mine={path}", "--settings",
            "2", "8", "nocap", "reject2x3", "reject8x3", "tokens2", "short", "long", "min5",
            "--n", "4", "--temperature", "0.5", "--max-tokens", "400", "--out", str(out)]
    runs, scaling = E.main(argv)
    methods = scaling["mine"]
    assert set(methods) == {"budget forcing", "rejection sampling", "token-conditional",
                            "class-conditional", "minimum thinking"}
    bf = methods["budget forcing"]
    assert bf["settings"] == ["2", "8", "nocap"] and bf["control"] == 1.0
    # capped at 2, the answer is forced before "c": "Final Answer: 7" is still right here, so
    # all three reach 100 % and Scaling is 0
    assert bf["performance"] == 100.0
    # a budget of 2 never accepts "abc" (3 tokens + its delimiter): 3 tries, not accepted
    rs = {r["setting"]: r for r in runs if r["method"] == "rejection sampling"}
    assert rs["reject2x3"]["avg_tries"] == 3 and rs["reject2x3"]["accepted"] == 0
    assert rs["reject8x3"]["avg_tries"] == 1 and rs["reject8x3"]["accepted"] == 1
    assert methods["rejection sampling"]["avg_tries"] == [3, 1]
    # token-conditional asks for 2 tokens; the model thinks 3: out of budget
    assert methods["token-conditional"]["control"] == 0.0
    nocap = next(r for r in runs if r["setting"] == "nocap")
    assert [p["k"] for p in nocap["parallel"]] == [1, 2, 4]
    assert [p["total_thinking_tokens"] for p in nocap["parallel"]] == [3, 6, 12]
    name = "results_2-8-nocap-reject2x3-reject8x3-tokens2-short-long-min5_n4_t0.5"
    assert len(name) > 60  # named by its start and a hash: other runs do not overwrite it
    report = next(p for p in os.listdir(out) if p.endswith(".md"))
    assert report.startswith(name[:48]) and report == E.report_name(argv[7:16], 4, 0.5) + ".md"
    table = (out / report).read_text()
    assert "| mine | rejection sampling | 2 |" in table and "| mine | nocap | 4 | 12 |" in table
    assert (out / report.replace(".md", "_parallel.png")).stat().st_size > 1000
    # a smaller --n reuses the first samples: nothing is generated
    runs2, _ = E.main(argv[:-8] + ["--n", "2", "--temperature", "0.5", "--max-tokens", "400",
                                   "--out", str(out)])
    assert [p["maj"] for p in runs2[0]["parallel"]] == [p["maj"] for p in runs[0]["parallel"][:2]]
    # a method's own model is part of the run: dropping it is refused, not mixed in
    with pytest.raises(SystemExit, match="method_models {} \\(now {'token-conditional'"):
        E.main(argv + ["--method-model", "token-conditional=other"])
