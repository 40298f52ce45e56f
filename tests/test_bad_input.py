"""Bad input gets one line naming the flag, file or record: never a traceback, a silent wrong
result, or a changed output file.

Bad flags go through each script's own parse_args in-process (every CLI parses its arguments
before anything else, and a subprocess costs 1-4 s of torch import per case); one bad flag per
script also runs as a real subprocess. Bad files run through the real CLIs as subprocesses."""
import concurrent.futures
import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, run, tiny_hf_model

import curate
import eval as E
import prepare
import sample
import serve
import train

# (script's parse_args, argv, what the one-line message must contain)
BAD_FLAGS = [
    (train.parse_args, ["--epochs", "0"], "--epochs: must be at least 1"),
    (train.parse_args, ["--epochs", "-1"], "--epochs"),
    (train.parse_args, ["--global-batch", "-4"], "--global-batch"),
    (train.parse_args, ["--global-batch", "0"], "--global-batch"),
    (train.parse_args, ["--block-size", "0"], "--block-size"),
    (train.parse_args, ["--save-every", "-1"], "--save-every"),
    (train.parse_args, ["--warmup-ratio", "2"], "--warmup-ratio: must be between 0 and 1"),
    (train.parse_args, ["--lr", "0"], "--lr: must be more than 0"),
    (train.parse_args, ["--lr", "nan"], "--lr: 'nan' is not a finite number"),
    (train.parse_args, ["--keep-checkpoints", "0"], "--keep-checkpoints"),
    (sample.parse_args, ["--prompt", "q", "--batch-size", "0"], "--batch-size"),
    (sample.parse_args, ["--prompt", "q", "--max-thinking-tokens", "-5"],
     "--max-thinking-tokens: must be at least 1"),
    (sample.parse_args, ["--prompt", "q", "--max-thinking-tokens", "0"], "--max-thinking-tokens"),
    (sample.parse_args, ["--prompt", "q", "--max-thinking-tokens", "x"],
     "--max-thinking-tokens: 'x' is not an integer"),
    (sample.parse_args, ["--prompt", "q", "--temperature", "-1"], "--temperature"),
    (sample.parse_args, ["--prompt", "q", "--temperature", "inf"], "--temperature"),
    (sample.parse_args, ["--prompt", "q", "--n", "0"], "--n"),
    (sample.parse_args, ["--prompt", "q", "--num-ignore", "-1"], "--num-ignore"),
    (sample.parse_args, ["--prompt", "q", "--top-p", "0"], "--top-p"),
    (sample.parse_args, ["--prompt", "q", "--max-tries", "0"], "--max-tries"),
    (E.parse_args, ["--batch-size", "0"], "--batch-size"),
    (E.parse_args, ["--limit", "-1"], "--limit"),
    (E.parse_args, ["--n", "0"], "--n"),
    (E.parse_args, ["--temperature", "-0.5"], "--temperature"),
    (prepare.parse_args, ["distill", "--pool", "p", "--out", "o", "--batch-size", "0"],
     "--batch-size"),
    (prepare.parse_args, ["distill", "--pool", "p", "--out", "o", "--max-thinking-tokens", "x"],
     "--max-thinking-tokens"),
    (prepare.parse_args, ["distill", "--pool", "p", "--out", "o", "--max-thinking-tokens", "-5"],
     "--max-thinking-tokens"),
    (prepare.parse_args, ["distill", "--pool", "p", "--out", "o", "--workers", "0"], "--workers"),
    (prepare.parse_args, ["collect", "--out", "o", "--n", "0"], "--n"),
    (prepare.parse_args, ["collect", "--out", "o", "--ngram", "0"], "--ngram"),
    (curate.parse_args, ["select", "--data", "d", "--out", "o", "--n", "0"], "--n"),
    (curate.parse_args, ["select", "--data", "d", "--out", "o", "--n", "-3"], "--n"),
    (curate.parse_args, ["features", "--data", "d", "--out", "o", "--workers", "0"], "--workers"),
    (serve.parse_args, ["--port", "70000"], "--port"),
    (serve.parse_args, ["--batch-size", "0"], "--batch-size"),
]


@pytest.mark.parametrize("parse, argv, message", BAD_FLAGS,
                         ids=[" ".join(a) for _, a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_naming_it(parse, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], err


def test_bad_flags_through_the_real_command_lines(tmp_path):
    cases = [["train.py", "--global-batch", "0"],
             ["sample.py", "--prompt", "q", "--temperature", "-1"],
             ["eval.py", "--limit", "-1"], ["prepare.py", "collect", "--out", "o", "--n", "0"],
             ["curate.py", "select", "--data", "d", "--out", "o", "--n", "0"],
             ["serve.py", "--batch-size", "0"]]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda c: run([sys.executable, os.path.join(ROOT, c[0]), *c[1:]],
                                            cwd=tmp_path, check=False), cases))
    for case, proc in zip(cases, procs):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (case, proc.stderr)
        assert case[-2] in proc.stderr.strip().splitlines()[-1] and not os.listdir(tmp_path)


def bad_files(root):
    """name -> path of each kind of bad input file."""
    os.makedirs(root / "a-directory")
    files = {"not-utf8": b'{"question": "What is 1+1?", "answer": "2"}\n{"question": "\xff\xfe"}\n',
             "empty": b"", "blank": b"\n  \n", "not-objects": b'["What is 1+1?", "2"]\n',
             "not-json": b'{"question": "What is 1+1?"}\n{"question": \n{"question": "x"}\n'}
    for name, data in files.items():
        (root / f"{name}.jsonl").write_bytes(data)
    paths = {name: str(root / f"{name}.jsonl") for name in files}
    paths.update({"a-directory": str(root / "a-directory"), "missing": str(root / "missing.jsonl")})
    return paths


def cli_cases(model, out):
    """(script, argv with INPUT for the bad file, the output it must not create) for each CLI
    reading a JSONL."""
    return [
        ("sample", ["sample.py", "--model", model, "--input", "INPUT", "--output", f"{out}/s.jsonl",
                    "--max-tokens", "64"], f"{out}/s.jsonl"),
        ("eval", ["eval.py", "--model", model, "--benchmarks", "mini", "--data", "mini=INPUT",
                  "--settings", "nocap", "--max-tokens", "64", "--out", f"{out}/eval"],
         f"{out}/eval/samples.jsonl"),
        ("distill", ["prepare.py", "distill", "--teacher", "mini", "--pool", "INPUT",
                     "--out", f"{out}/d.jsonl"], f"{out}/d.jsonl"),
        ("collect", ["prepare.py", "collect", "--sources", "mine", "--local", "mine=INPUT",
                     "--eval-sets", "aime24", "--out", f"{out}/c.jsonl"], f"{out}/c.jsonl"),
        ("features", ["curate.py", "features", "--data", "INPUT", "--solvers", "mini",
                      "--classifier", "none", "--tokenizer", model, "--out", f"{out}/f.jsonl"],
         f"{out}/f.jsonl"),
        ("select", ["curate.py", "select", "--data", "INPUT", "--out", f"{out}/sel.jsonl"],
         f"{out}/sel.jsonl"),
        ("train", ["train.py", "--model", model, "--data", "INPUT", "--out", f"{out}/train",
                   "--device", "cpu", "--dtype", "float32"], f"{out}/train/final"),
    ]


def test_bad_files_are_one_line_naming_the_file(tiny_sft, tmp_path):
    model, _ = tiny_sft
    files = bad_files(tmp_path / "in")
    # sample.py and train.py import torch at start (~4 s each here): they get the kinds their own
    # code handles; jsonl.py's rule, which reads every file, meets every kind through the other five
    slow = {"sample": {"not-utf8", "empty", "not-objects", "a-directory"},
            "train": {"not-utf8", "empty", "missing"}}
    jobs = [(script, kind, [sys.executable, *[a.replace("INPUT", path) for a in argv]], output)
            for kind, path in files.items()
            for script, argv, output in cli_cases(model, tmp_path / kind)
            if kind in slow.get(script, files)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda j: run(j[2], check=False), jobs))
    failures = []
    for (script, kind, cmd, output), proc in zip(jobs, procs):
        lines = proc.stderr.strip().splitlines()
        ok = proc.returncode in (1, 2) and "Traceback" not in proc.stderr and lines and \
            files[kind] in lines[-1] and not os.path.exists(output)
        if not ok:
            failures.append(f"{script} {kind}: rc {proc.returncode}: {proc.stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)


def test_model_problems_are_one_line(tiny_sft, tmp_path):
    """A missing checkpoint, one without tokenizer files, and a prompt that leaves no room."""
    model, _ = tiny_sft
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(model, f), no_tokenizer / f)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "What is 1+1?", "answer": "2"}) + "\n")
    missing = str(tmp_path / "no-such-model")
    cases = [(["sample.py", "--model", M, "--prompt", "hi"], M)
             for M in (missing, str(no_tokenizer))] + \
            [(["eval.py", "--model", M, "--benchmarks", "mini", "--data", f"mini={questions}",
               "--out", str(tmp_path / "eval"), "--max-tokens", "64"], M)
             for M in (missing, str(no_tokenizer))] + \
            [(["train.py", "--model", M, "--data", str(questions), "--out", str(tmp_path / "t"),
               "--device", "cpu"], M) for M in (missing,)] + \
            [(["serve.py", "--model", missing], missing),
             (["prepare.py", "distill", "--teacher", "local", "--model", missing,
               "--pool", str(questions), "--out", str(tmp_path / "d.jsonl")], missing),
             (["sample.py", "--model", model, "--prompt", "x" * 100, "--max-tokens", "16"],
              "--prompt")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda c: run([sys.executable, *c[0]], check=False), cases))
    for (cmd, named), proc in zip(cases, procs):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and named in lines[-1], (
            cmd, proc.stderr[-600:])
    assert "no tokenizer files" in procs[1].stderr and "raise --max-tokens" in procs[-1].stderr


def test_a_sample_output_is_not_resumed_with_another_config(tiny_sft, tmp_path):
    """Rows capped at 8 thinking tokens and rows capped at 16 never share a file: the rerun is
    refused, naming the change, and the file is untouched. The same flags resume."""
    model, _ = tiny_sft
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"What is {i}+1?"}) + "\n"
                                 for i in range(2)))
    out = tmp_path / "samples.jsonl"
    cmd = [sys.executable, "sample.py", "--model", model, "--input", str(questions),
           "--output", str(out), "--max-tokens", "200", "--device", "cpu"]
    run(cmd + ["--max-thinking-tokens", "8"])
    before = out.read_text()
    assert len(before.splitlines()) == 2 and (tmp_path / "samples.config.json").exists()
    proc = run(cmd + ["--max-thinking-tokens", "16"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and out.read_text() == before
    assert ("samples.config.json: made with max_thinking_tokens 8 (now 16); use another --output"
            in proc.stderr)
    proc = run(cmd + ["--max-thinking-tokens", "8"])
    assert "2 questions, 2 already in" in proc.stderr and out.read_text() == before
    # another model at the same path (retrained there): refused, naming the weights
    shutil.copytree(model, tmp_path / "model")
    cmd = ([a if a != model else str(tmp_path / "model") for a in cmd]
           + ["--max-thinking-tokens", "8"])
    cmd[cmd.index(str(out))] = str(tmp_path / "other.jsonl")
    run(cmd)
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=1).save_pretrained(
        tmp_path / "model")
    proc = run(cmd, check=False)
    assert proc.returncode == 1, proc.stderr[-500:]
    assert "other.config.json: made with weights '" in proc.stderr, proc.stderr[-500:]
