"""make gpu-check (bench.py gpu) on a CPU: tiny shapes through every path it checks on a GPU, so
that none of it is dead code by the time someone runs it on one."""
import json
import sys

from conftest import run

SECTIONS = ["attention", "sdpa_kernels", "train", "decode", "two_gpus", "goals"]


def test_gpu_check_runs_on_cpu_and_reports_every_section(tmp_path):
    run([sys.executable, "bench.py", "gpu", "--device", "cpu", "--report-dir", str(tmp_path)], timeout=600)
    report = json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    for name in SECTIONS:
        assert name in report and "error" not in report[name], (name, report.get(name))
    for title in ["Attention vs fp32 CPU", "SDPA kernel per shape", "train.py step", "Decode", "Two GPUs", "Goals"]:
        assert f"## {title}" in md
    assert "skipped: a CPU run" in md and "| rows: SDPA |" in md

    # Every path that runs here agrees with fp32 (bf16 rounding is far below the tolerance), and the
    # CUDA-only kernels say why they were skipped.
    paths = {p["path"]: p for p in report["attention"]["paths"]}
    assert paths["packed: torch varlen_attn"]["note"] in ("skipped: CUDA only", "skipped: torch.nn.attention.varlen not installed")
    assert paths["packed: flash-attn varlen"]["note"].startswith("skipped: ")
    ran = [p for p in paths.values() if "note" not in p]
    assert {"rows: SDPA", "packed: SDPA per document", "KV cache: paged prefill"} <= {p["path"] for p in ran}
    assert any(p.startswith("KV cache: paged decode") for p in paths)
    for p in ran:
        assert p["ok"] and 0 < p["logits_rel"] < 0.02 and p["logits_max_abs"] < 0.05, p
        assert p.get("grad_rel", 0) < 0.02, p
    assert all(s["selected"] for s in report["sdpa_kernels"])

    # train.py really ran (its log), decode really generated; GPU-only numbers are absent, not made up.
    (train,) = report["train"]
    assert train["steps"] == 2 and train["tokens_per_s"] > 0 and train["mfu"] is None and train["plan_error"] is None
    assert report["decode"]["batch_1_tokens_per_s"] > 0 and report["decode"]["batch_64_tokens_per_s"] > 0
    assert report["decode"]["roofline_fraction"] is None and "unknown HBM bandwidth" in report["decode"]["note"]
    assert "skipped" in report["two_gpus"]
    assert len(report["goals"]) == 3 and all(g["met"] is None for g in report["goals"])
