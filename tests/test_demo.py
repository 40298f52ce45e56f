"""The miniature pipeline end to end (demo.py --small): every stage runs through the real scripts,
every output exists, and budget forcing respects its caps."""
import json
import sys

from conftest import run


def test_small_demo_runs_end_to_end_and_respects_the_caps(tmp_path):
    out = tmp_path / "demo"
    proc = run([sys.executable, "demo.py", "--small", "--out", str(out)], timeout=600)
    for name in ("pool.jsonl", "traces.jsonl", "s1K.jsonl", "test.jsonl", "train/final/model.safetensors",
                 "eval/results.md", "eval/results.json", "eval/samples.jsonl"):
        assert (out / name).exists(), name
    assert (out / "eval" / "scaling.png").stat().st_size > 10_000
    samples = [json.loads(line) for line in (out / "eval" / "samples.jsonl").read_text().splitlines()]
    capped = [s for s in samples if s["setting"].isdigit()]
    assert capped and all(s["thinking_tokens"] <= int(s["setting"]) for s in capped)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["scaling"]["mini"]["control"] == 1.0
    assert "Control 100 %" in proc.stdout
    # a second run skips every stage
    again = run([sys.executable, "demo.py", "--small", "--out", str(out)])
    assert again.stdout.count("done already") == 7


def test_spread_table_checks_the_goals_and_a_run_is_placed_against_readme(monkeypatch):
    import demo

    def figures(no_cap, cap, wait2, se):
        return {"no cap": no_cap, "smallest cap": cap, "gap": no_cap - cap, "Wait x1": wait2, "Wait x2": wait2,
                "Wait x1 SE": se, "Wait x2 SE": se}
    good, low = figures(44.0, 2.0, 30.0, 2.0), figures(36.0, 7.0, 4.0, 1.5)
    table = demo.spread_table([("a", good), ("b", figures(40.0, 1.0, 25.0, 2.5))])
    assert "| min-max | 40.0 to 44.0 | 1.0 to 2.0 | 39.0 to 42.0 |" in table
    assert "gap >= 30 on every run: met; no-cap spread 4.0 <= 6: met; Wait x2 >= +5 and > 2 SE on every run: met" in table
    table = demo.spread_table([("a", good), ("b", low)])
    assert "gap >= 30 on every run: NOT met; no-cap spread 8.0 <= 6: NOT met; Wait x2" in table
    assert table.endswith("on every run: NOT met")
    monkeypatch.setattr(demo, "MEASURED", {"no cap": (40.0, 45.0), "Wait x2": (20.0, 35.0)})
    lines = demo.against_readme(low).splitlines()
    assert lines[1] == "- no cap: 36.0 %, OUTSIDE README's range, 40.0 % to 45.0 %"
    assert lines[2] == "- Wait x2: +4.0 points, OUTSIDE README's range, +20.0 points to +35.0 points"
    assert "OUTSIDE" not in demo.against_readme(good)
