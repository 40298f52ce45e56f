"""The miniature pipeline end to end (demo.py --small): every stage runs through the real scripts,
every output exists, and budget forcing respects its caps."""
import json
import sys

import pytest
from conftest import run


def test_small_demo_runs_end_to_end_and_respects_the_caps(tmp_path):
    out = tmp_path / "demo"
    proc = run([sys.executable, "demo.py", "--small", "--out", str(out)], timeout=600)
    for name in ("pool.jsonl", "traces.jsonl", "s1K.jsonl", "test.jsonl",
                 "train/final/model.safetensors", "eval/results.md", "eval/results.json",
                 "eval/samples.jsonl"):
        assert (out / name).exists(), name
    assert (out / "eval" / "results_scaling.png").stat().st_size > 10_000
    samples = [json.loads(line)
               for line in (out / "eval" / "samples.jsonl").read_text().splitlines()]
    capped = [s for s in samples if s["setting"].isdigit()]
    assert capped and all(s["thinking_tokens"] <= int(s["setting"]) for s in capped)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["scaling"]["mini"]["budget forcing"]["control"] == 1.0
    assert "Control 100 %" in proc.stdout
    # a second run skips every stage
    again = run([sys.executable, "demo.py", "--small", "--out", str(out)])
    assert again.stdout.count("done already") == 7
    # another training (a flag passed through to train.py) retrains, and then evaluates afresh: the
    # new model is never scored from the old one's samples
    old_sha = results["config"]["weights"]
    again = run([sys.executable, "demo.py", "--small", "--out", str(out), "--", "--lr", "2e-3"])
    assert again.stdout.count("done already") == 5 and "== train\n" in again.stdout
    assert "0 of 280 samples already" in again.stdout and " --lr 2e-3" in again.stdout
    assert json.loads((out / "eval" / "results.json").read_text())["config"]["weights"] != old_sha
    assert json.loads((out / "train" / "train_config.json").read_text())["lr"] == 2e-3


def test_stages_rerun_when_their_command_or_code_changes_and_everything_after_them(
        tmp_path, monkeypatch):
    """demo.run_stages on three stages that append to a log: a rerun skips them all; a changed
    command reruns that stage and every later one, not the ones before; --force reruns all, each
    starting from an empty output (a stage's older files are cleared first)."""
    import demo
    monkeypatch.setattr(demo, "code_hash", lambda model: "code-1")
    log = tmp_path / "log"

    def stages(second="b"):
        return [(name, str(tmp_path / f"{name}.out"),
                 [sys.executable, "-c",
                  f"import pathlib; p = pathlib.Path({str(tmp_path / name)!r} + '.out'); "
                  f"assert not p.exists(); p.write_text('x'); "
                  f"open({str(log)!r}, 'a').write({text!r})"])
                for name, text in (("first", "a"), ("second", second), ("third", "c"))]
    demo.run_stages(stages(), {}, "model", force=False)
    demo.run_stages(stages(), {}, "model", force=False)
    assert log.read_text() == "abc"
    demo.run_stages(stages("B"), {}, "model", force=False)
    assert log.read_text() == "abcBc"
    demo.run_stages(stages("B"), {}, "model", force=True)
    assert log.read_text() == "abcBcaBc"
    # the code changed: all again
    monkeypatch.setattr(demo, "code_hash", lambda model: "code-2")
    demo.run_stages(stages("B"), {}, "model", force=False)
    assert log.read_text() == "abcBcaBcaBc"
    failing = [("fails", str(tmp_path / "never"),
                [sys.executable, "-c", "raise SystemExit(3)"])]
    with pytest.raises(SystemExit, match="demo: fails failed \\(exit code 3\\)"):
        demo.run_stages(failing, {}, "model", force=False)


def test_a_bad_model_config_is_one_line_before_any_stage(tmp_path):
    """hidden 132 over 4 heads is a head of 33 channels, which rotary positions cannot pair: named,
    with its file, before any data is made (it used to end in a shape error deep in model.py)."""
    config = json.loads(open("data/demo-model/config.json").read())
    (tmp_path / "c.json").write_text(json.dumps(dict(config, hidden_size=132)))
    proc = run([sys.executable, "demo.py", "--small", "--out", str(tmp_path / "demo"),
                "--model-config", str(tmp_path / "c.json")], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{tmp_path / 'c.json'}: hidden_size / num_attention_heads = 33 must be even "
        "(rotary positions pair a head's channels): hidden_size 132, num_attention_heads 4"]
    assert not (tmp_path / "demo" / "test.jsonl").exists()


def test_spread_table_checks_the_goals_and_a_run_is_placed_against_readme(monkeypatch):
    import demo

    def figures(no_cap, cap, wait2, se):
        return {"no cap": no_cap, "smallest cap": cap, "gap": no_cap - cap, "Wait x1": wait2,
                "Wait x2": wait2, "Wait x1 SE": se, "Wait x2 SE": se}
    good, low = figures(44.0, 2.0, 30.0, 2.0), figures(36.0, 7.0, 4.0, 1.5)
    table = demo.spread_table([("a", good), ("b", figures(40.0, 1.0, 25.0, 2.5))])
    assert "| min-max | 40.0 to 44.0 | 1.0 to 2.0 | 39.0 to 42.0 |" in table
    assert ("gap >= 30 on every run: met; no-cap spread 4.0 <= 6: met; "
            "Wait x2 >= +5 and > 2 SE on every run: met") in table
    table = demo.spread_table([("a", good), ("b", low)])
    assert "gap >= 30 on every run: NOT met; no-cap spread 8.0 <= 6: NOT met; Wait x2" in table
    assert table.endswith("on every run: NOT met")
    monkeypatch.setattr(demo, "MEASURED", {"no cap": (40.0, 45.0), "Wait x2": (20.0, 35.0)})
    lines = demo.against_readme(low).splitlines()
    assert lines[1] == "- no cap: 36.0 %, OUTSIDE README's range, 40.0 % to 45.0 %"
    assert lines[2] == ("- Wait x2: +4.0 points, OUTSIDE README's range, "
                        "+20.0 points to +35.0 points")
    assert "OUTSIDE" not in demo.against_readme(good)
