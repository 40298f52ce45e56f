"""make gpu-check (python -m tools.gpu_check) on a CPU: tiny shapes through every path it checks on
a GPU, so that none of it is dead code by the time someone runs it on one; and without a GPU, the
check as make runs it stops in one line instead of handing back a CPU report."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run

SECTIONS = ["attention", "sdpa_kernels", "train", "decode", "two_gpus", "goals"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_make_gpu_check_without_a_gpu_exits_nonzero_in_one_line(tmp_path):
    # -o .venv/installed: never (re)build the environment from inside a test
    proc = subprocess.run(["make", "-s", "-o", ".venv/installed", "gpu-check",
                           f"GPU_CHECK_ARGS=--report-dir {tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert proc.returncode != 0 and proc.stdout == "" and len(ours) == 1, (proc.stdout, proc.stderr)
    assert ours[0].startswith("--device cuda: no usable CUDA GPU") and "nvidia-smi" in ours[0]
    # no report written: a CPU result is never handed back as a GPU one
    assert not list(tmp_path.iterdir())


def test_gpu_check_runs_on_cpu_and_reports_every_section(tmp_path):
    run([sys.executable, "-m", "tools.gpu_check", "--device", "cpu", "--report-dir", str(tmp_path)],
        timeout=600)
    report = json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    for name in SECTIONS:
        assert name in report and "error" not in report[name], (name, report.get(name))
    for title in ["Attention vs fp32 CPU", "SDPA kernel per shape", "train.py step", "Decode",
                  "Two GPUs", "Goals"]:
        assert f"## {title}" in md
    assert "skipped: a CPU run" in md and "| rows: SDPA |" in md

    # Every path that runs here agrees with fp32 (bf16 rounding is far below the tolerance), and the
    # CUDA-only kernels say why they were skipped.
    paths = {p["path"]: p for p in report["attention"]["paths"]}
    assert paths["packed: torch varlen_attn"]["note"] in (
        "skipped: CUDA only", "skipped: torch.nn.attention.varlen not installed")
    assert paths["packed: flash-attn varlen"]["note"].startswith("skipped: ")
    ran = [p for p in paths.values() if "note" not in p]
    assert {"rows: SDPA", "packed: SDPA per document", "KV cache: paged prefill, 16-token blocks",
            "KV cache: paged decode, gather + SDPA"} <= {p["path"] for p in ran}
    for p in ran:
        assert p["ok"] and 0 < p["logits_rel"] < 0.02 and p["logits_max_abs"] < 0.05, p
        assert p.get("grad_rel", 0) < 0.02, p
    kernels = report["sdpa_kernels"]
    assert len(kernels) == 4 and all(s["selected"] for s in kernels)
    assert "train, unpacked row" in kernels[0]["shape"]
    assert not any("flash_or_efficient" in s for s in kernels)  # asked on CUDA only

    # train.py really ran (its log), decode really generated; GPU-only numbers are absent, not made
    # up.
    (train,) = report["train"]
    assert train["steps"] == 2 and train["tokens_per_s"] > 0
    assert train["mfu"] is None and train["plan_error"] is None
    decode = report["decode"]
    assert decode["batch_1_tokens_per_s"] > 0 and decode["batch_64_tokens_per_s"] > 0
    assert decode["roofline_fraction"] is None and decode["note"].startswith("peak unknown")
    assert report["peak"] is None and "Peak unknown for CPU: MFU and the roofline fraction" in md
    assert decode["kernel"] == "gather + SDPA"
    assert "skipped" in report["two_gpus"]
    # per goal: the goal, the measured value and the result
    assert len(report["goals"]) == 4 and all(g["result"] == "not measured" for g in report["goals"])
    assert "| goal | measured | result |" in md


def test_the_decode_roofline_counts_what_a_step_reads():
    """Every weight once, but of an untied embedding table only the vectors of the tokens fed (none
    counted); a tied one is the LM head, read whole. Plus the KV cache at the mean context."""
    import dataclasses

    from tools import gpu_check
    from machinery import plan
    for tied in (True, False):
        cfg = dataclasses.replace(gpu_check.TINY, tie_word_embeddings=tied)
        model = gpu_check.random_model(cfg, "cpu", torch.float32)
        embedding = 0 if tied else cfg.vocab_size * cfg.hidden_size * 4
        # the decode steps' contexts: 17, 18, 19 and 20 keys
        kv = plan.kv_bytes_per_token(cfg, cfg.num_key_value_heads, 4) * (17 + 18 + 19 + 20) / 4
        got = gpu_check.check_decode(model, 4, 1)["bytes_per_token"]
        assert got == sum(p.numel() * 4 for p in model.parameters()) - embedding + kv


# the names torch.cuda.get_device_name gives (NVIDIA's product names as the driver reports them)
@pytest.mark.parametrize("name, gpu, tflops, gb_s", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989, 3350),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756, 2000),
    ("NVIDIA H100 NVL", "H100 NVL", 835, 3900),
    ("NVIDIA H200", "H200 SXM", 989, 4800),
    ("NVIDIA H200 NVL", "H200 NVL", 835, 4800),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 312, 2039),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe", 312, 1935),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312, 1555),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 312, 1555),
    ("NVIDIA L40S", "L40S", 362, 864),
    ("NVIDIA GH200 480GB", None, None, None),  # not an H200: whole words only
    ("NVIDIA H100", None, None, None),  # which board is unknown
    ("Tesla V100-SXM2-16GB", None, None, None),
    ("NVIDIA L40", None, None, None)])
def test_peak_flops_and_bandwidth_come_from_the_device_name(name, gpu, tflops, gb_s):
    from machinery import plan
    peak = plan.gpu_peak(name)
    assert peak == (gpu and dict(gpu=gpu, bf16_tflops=tflops, memory_gb_s=gb_s))


@pytest.mark.parametrize("name", ["NVIDIA H100 PCIe", "NVIDIA B300"])
def test_train_mfu_and_the_decode_roofline_use_the_devices_peak(monkeypatch, name):
    """MFU against the card's own peak (an H100 PCIe's 756 TFLOPS, not the SXM's 989: 24 % under),
    and the roofline against its own bandwidth; a GPU of unknown peak reports neither."""
    import train
    from machinery import plan
    from tools import gpu_check
    for fn, value in (("get_device_name", name), ("mem_get_info", (10 * 2 ** 30, 80 * 2 ** 30)),
                      ("max_memory_allocated", 2 ** 30), ("max_memory_reserved", 2 ** 30)):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, _value=value, **kw: _value)
    cfg = gpu_check.TINY
    used = train.usage(torch.device("cuda"), cfg, [100, 300], 0.5, 2)
    flops = plan.train_flops(cfg, 100) + plan.train_flops(cfg, 300)
    peak = plan.gpu_peak(name)
    decode = gpu_check.check_decode(gpu_check.random_model(cfg, "cpu", torch.float32), 4, 1, peak)
    if peak is None:
        assert used["mfu"] is None and decode["roofline_fraction"] is None
        assert decode["memory_gb_s"] is None and decode["note"].startswith("peak unknown")
    else:
        assert used["mfu"] == pytest.approx(flops / 0.5 / (2 * 756e12))
        assert decode["memory_gb_s"] == 2000 and decode["note"] is None
        assert decode["roofline_fraction"] == pytest.approx(decode["achieved_gb_s"] / 2000)


def test_the_decode_timer_covers_only_the_decode_steps(monkeypatch):
    """Building the engine (on an H100 a 55 GB zero-filled KV pool) and the prefill are not
    decoding. On a clock of the test's, each costs 100 s and each decode step 1 s: 8 tokens per
    row take 8 s, so batch 1 decodes exactly 1 token/s and batch 64 64 (timing all of it gave
    8 / 208 s at batch 1)."""
    import types

    from machinery import engine
    from tools import gpu_check
    clock = [0.0]

    class Clocked(engine.Engine):
        def __init__(self, *a, **kw):
            clock[0] += 100
            super().__init__(*a, **kw)

        def step(self):
            clock[0] += 100 if self.steps == 0 else 1  # the prefill, then decode steps
            return super().step()
    monkeypatch.setattr(engine, "Engine", Clocked)
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    model = gpu_check.random_model(gpu_check.TINY, "cpu", torch.float32)
    decode = gpu_check.check_decode(model, 8, 1)
    assert decode["batch_1_tokens_per_s"] == 1.0 and decode["batch_64_tokens_per_s"] == 64.0
