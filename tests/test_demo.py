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
