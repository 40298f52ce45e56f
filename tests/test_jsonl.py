"""jsonl.py's one rule, on every output a run appends to and resumes: an unreadable line that is
not the last stops the run in one line naming the file and the line, and the file is left as it
was; a torn last line (a kill mid-write) is dropped, reported, cut, and the run goes on where it
stopped."""
import json
import os
import sys
import types

import pytest
from conftest import tiny_hf_model

import curate
import eval as E
import prepare
import sample
import train
from machinery import chat, jsonl

TORN = '{"question_hash": "0123'  # what a kill in the middle of a write leaves


def lines(path):
    with open(path) as f:
        return f.read().splitlines(keepends=True)


def corrupt_middle(path):
    """Line 2 of path made unreadable; returns the file's text, which the run must leave as it
    is."""
    text = lines(path)
    assert len(text) >= 3
    text[1] = text[1][:len(text[1]) // 2] + "\n"
    with open(path, "w") as f:
        f.writelines(text)
    return "".join(text)


def stops_naming_line_2(path, run):
    before = open(path).read()
    with pytest.raises(SystemExit) as stop:
        run()
    message = str(stop.value)
    assert message.startswith(f"{path} line 2: not valid JSON") and "\n" not in message, message
    assert open(path).read() == before  # nothing rewritten, nothing lost


def tear(path, keep):
    """The file's first `keep` lines, then a torn line; returns those lines."""
    kept = lines(path)[:keep]
    with open(path, "w") as f:
        f.writelines(kept)
        f.write(TORN)
    return kept


# ----------------------------------------------------------------------------------------------
# The rule itself

def test_the_rule(tmp_path, capsys):
    path = str(tmp_path / "a.jsonl")
    with open(path, "w") as f:
        f.write('{"a": 1}\n\n{"a": 2}\n' + TORN)
    # blank lines skipped, the torn one dropped...
    assert jsonl.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    # ...and said so
    assert capsys.readouterr().err == f"{path} line 4: dropping a half-written last line\n"
    assert open(path).read().endswith(TORN)  # reading alone changes nothing
    assert jsonl.resume(path) == [{"a": 1}, {"a": 2}]
    assert open(path).read() == '{"a": 1}\n\n{"a": 2}\n'  # resuming cuts the torn tail, and only it
    with open(path, "a") as f:
        f.write('{"a": 3}')  # whole, but without its newline: kept, and ended with one
    assert jsonl.resume(path) == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert open(path).read().endswith('{"a": 3}\n')
    jsonl.write_jsonl(path, [{"a": i} for i in range(3)])
    corrupt_middle(path)
    stops_naming_line_2(path, lambda: jsonl.resume(path))
    with open(path, "w") as f:
        # a whole last line (it has its newline) is no torn one: an error
        f.write('{"a": 1}\n{"a": \n')
    with pytest.raises(SystemExit, match=r"a.jsonl line 2: not valid JSON"):
        jsonl.read_jsonl(path)
    assert jsonl.resume(str(tmp_path / "none.jsonl")) == []  # before a first run
    with pytest.raises(SystemExit, match=r"missing.jsonl: no such file"):
        jsonl.read_jsonl(str(tmp_path / "missing.jsonl"))
    big = str(tmp_path / "big.jsonl")  # a torn tail found across read blocks
    jsonl.write_jsonl(big, [{"text": "x" * 50_000}] * 3)
    with open(big, "a") as f:
        f.write('{"text": "' + "y" * 100_000)
    assert len(jsonl.resume(big)) == 3
    assert os.path.getsize(big) == 3 * len(json.dumps({"text": "x" * 50_000}) + "\n")
    jsonl.write_atomic(str(tmp_path / "out" / "r.md"), "done\n")
    assert os.listdir(tmp_path / "out") == ["r.md"]  # the temporary file is gone


# ----------------------------------------------------------------------------------------------
# Every output that a run appends to

def test_sample_output(tmp_path, capsys):
    model = tmp_path / "model"
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(model)
    chat.build_byte_tokenizer(str(model))
    questions, out = tmp_path / "q.jsonl", str(tmp_path / "out.jsonl")
    jsonl.write_jsonl(str(questions),
                      [{"id": f"q{i}", "question": f"What is {i}+{i}?"} for i in range(4)])
    run = lambda: sample.main(["--model", str(model), "--input", str(questions), "--output", out,
                               "--max-thinking-tokens", "4", "--max-tokens", "160",
                               "--device", "cpu", "--dtype", "float32"])
    ids = lambda: sorted(json.loads(line)["id"] for line in lines(out))
    run()
    done = lines(out)
    assert ids() == ["q0", "q1", "q2", "q3"]
    corrupt_middle(out)
    stops_naming_line_2(out, run)
    with open(out, "w") as f:
        f.writelines(done)
    kept = tear(out, 2)
    capsys.readouterr()
    run()
    assert "dropping a half-written last line" in capsys.readouterr().err
    assert lines(out)[:2] == kept and ids() == ["q0", "q1", "q2", "q3"]


def test_eval_samples(tmp_path, monkeypatch, capsys):
    tokenizer = chat.build_byte_tokenizer(str(tmp_path / "tok"))
    calls = []

    # a stand-in decoder
    def generate(model, tokenizer, questions, settings, n=1, on_result=None, **kw):
        calls.append(len(questions))
        for i, question in enumerate(questions):
            out = {"prompt": chat.prompt_text(question),
                   "text": f"\nhm\n{chat.ANSWER}\n\\boxed{{7}}{chat.IM_END}",
                   "answer": "\\boxed{7}", "thinking_tokens": 2, "answer_tokens": 3,
                   "ended": "natural", "forced": [], "finished": True}
            on_result(i, out)
    import sample
    monkeypatch.setitem(sys.modules, "sample", types.SimpleNamespace(**{
        **vars(sample), "generate": generate,
        "load_for_generation": lambda *a, **kw: (None, tokenizer, 1, 0)}))
    out = tmp_path / "run"
    path = str(out / "samples.jsonl")
    argv = ["--model", "stand-in", "--benchmarks", "math500", "--limit", "4", "--settings", "auto",
            "--device", "cpu", "--dtype", "float32", "--out", str(out)]
    E.main(argv)
    done = lines(path)
    assert len(done) == 4 and calls == [4]
    corrupt_middle(path)
    stops_naming_line_2(path, lambda: E.main(argv))
    with open(path, "w") as f:
        f.writelines(done)
    kept = tear(path, 3)
    E.main(argv)
    assert "dropping a half-written last line" in capsys.readouterr().err
    assert calls == [4, 1] and lines(path)[:3] == kept and sorted(lines(path)) == sorted(done)


def test_distill_cache(tmp_path, capsys):
    pool, out = str(tmp_path / "pool.jsonl"), str(tmp_path / "d.jsonl")
    cache = str(tmp_path / "d.cache.jsonl")
    prepare.main(["collect", "--sources", "mini", "--n", "6", "--eval-sets", "aime24",
                  "--out", pool])
    args = ["distill", "--pool", pool, "--teacher", "mini", "--out", out]
    prepare.main(args + ["--limit", "4"])
    corrupt_middle(cache)
    stops_naming_line_2(cache, lambda: prepare.main(args))
    again = ["distill", "--pool", pool, "--teacher", "mini", "--out", str(tmp_path / "e.jsonl")]
    prepare.main(again)
    cache = str(tmp_path / "e.cache.jsonl")
    kept = tear(cache, 3)
    capsys.readouterr()
    prepare.main(again)
    assert "dropping a half-written last line" in capsys.readouterr().err
    assert lines(cache)[:3] == kept
    assert len(jsonl.read_jsonl(cache)) == len(jsonl.read_jsonl(pool)) == 6


def test_curate_features_cache(tmp_path, capsys):
    pool, distilled, out = (str(tmp_path / n) for n in ("pool.jsonl", "d.jsonl", "f.jsonl"))
    prepare.main(["collect", "--sources", "mini", "--n", "5", "--eval-sets", "aime24",
                  "--out", pool])
    prepare.main(["distill", "--pool", pool, "--teacher", "mini", "--out", distilled])
    chat.build_byte_tokenizer(str(tmp_path / "tok"))
    args = ["features", "--data", distilled, "--solvers", "mini",
            "--tokenizer", str(tmp_path / "tok"), "--classifier", "none", "--out", out]
    curate.main(args)
    cache = str(tmp_path / "f.answers.jsonl")
    done, features = lines(cache), jsonl.read_jsonl(out)
    corrupt_middle(cache)
    stops_naming_line_2(cache, lambda: curate.main(args))
    with open(cache, "w") as f:
        f.writelines(done)
    kept = tear(cache, 2)
    capsys.readouterr()
    curate.main(args)
    captured = capsys.readouterr()
    assert "dropping a half-written last line" in captured.err
    assert "2 answers cached, 3 to generate" in captured.out
    assert lines(cache)[:2] == kept and sorted(lines(cache)) == sorted(done)
    assert jsonl.read_jsonl(out) == features


def test_train_log(tmp_path, capsys):
    path = str(tmp_path / "log.jsonl")
    jsonl.write_jsonl(path, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')
    log = train.open_log(path, resume=True)
    jsonl.write_line(log, {"step": 3, "loss": 1.0})
    log.close()
    assert "dropping a half-written last line" in capsys.readouterr().err
    assert [r["loss"] for r in train.read_log(path)] == [2.0, 1.5, 1.0]
