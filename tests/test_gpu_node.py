"""What a rented GPU node meets before any kernel runs, with the GPU queries faked: the --device
preflight (torch's CUDA build, the NVIDIA driver, what to install), which files each rank
downloads, and the collective timeout of every script that runs under torchrun."""
import datetime
import fnmatch
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import sample
import train
from machinery import cli, parallel

NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |
"""


def test_nvidia_smi_gives_the_driver_and_its_cuda_or_none(monkeypatch):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, stdout=NVIDIA_SMI, stderr="")
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli.nvidia_smi() == ("550.54.15", "12.4")

    def missing(cmd, **kw):
        raise FileNotFoundError(cmd[0])
    monkeypatch.setattr(subprocess, "run", missing)
    assert cli.nvidia_smi() is None


@pytest.fixture
def node(monkeypatch, tmp_path):
    """A node as the test describes it: whether torch's CUDA works, torch's CUDA version,
    nvidia-smi's answer (None: no driver), and whether it has NVSwitches (their device files, in a
    folder of the test's). Returns a setter; counts nvidia-smi calls."""
    calls = []

    def set_(available, torch_cuda, smi, nvswitches=0):
        calls.clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.version, "cuda", torch_cuda)
        monkeypatch.setattr(cli, "nvidia_smi", lambda: calls.append(1) or smi)
        dev = tmp_path / f"dev-{nvswitches}"
        dev.mkdir(exist_ok=True)
        for i in range(nvswitches):  # as the nvswitch driver names them, beside its control file
            (dev / f"nvidia-nvswitch{i}").touch()
        (dev / "nvidia-nvswitchctl").touch()
        monkeypatch.setattr(cli, "NVSWITCH_PATHS", (str(dev / "nvidia-nvswitch[0-9]*"),))
    set_.calls = calls
    return set_


def device_error(choice):
    with pytest.raises(SystemExit) as e:
        cli.device(choice)
    message = str(e.value.code)
    assert "\n" not in message and message.startswith(f"--device {choice}: no usable CUDA GPU")
    return message


def test_the_preflight_names_torchs_cuda_the_driver_and_what_to_install(node):
    # PyPI's torch 2.13.0 (CUDA 13.0) on a node whose driver runs CUDA 12.4: both --device cuda and
    # auto stop
    node(False, "13.0", ("550.54.15", "12.4"))
    for choice in ("cuda", "auto"):
        message = device_error(choice)
        assert "torch.version.cuda 13.0" in message and "driver 550.54.15" in message
        assert "CUDA 12.4 at most" in message and "R580" in message
        assert "run `make venv-cu12` for a torch built for CUDA 12" in message
    # a driver too old for CUDA 12 as well: only an upgrade helps
    node(False, "13.0", ("470.256.02", "11.4"))
    message = device_error("cuda")
    assert "upgrade the driver" in message and "venv-cu12" not in message
    # a CPU build of torch on a GPU node: PyPI's torch for an R580 driver, else the CUDA 12 venv
    node(False, None, ("580.82.07", "13.0"))
    message = device_error("auto")
    assert "torch.version.cuda None" in message and "CPU build" in message
    assert "580.82.07" in message and "reinstall the pinned torch from PyPI" in message
    node(False, None, ("550.54.15", "12.4"))
    assert "CPU build" in device_error("auto") and "make venv-cu12" in device_error("auto")
    # no driver at all: auto is the CPU (a laptop, CI); cuda stops, naming the missing driver
    node(False, None, None)
    assert cli.device("auto") == torch.device("cpu")
    assert "no NVIDIA driver" in device_error("cuda")
    # CUDA that works is used, and --device cpu is the CPU, both without asking nvidia-smi
    node(True, "13.0", ("580.82.07", "13.0"))
    assert cli.device("auto") == torch.device("cuda") == cli.device("cuda")
    assert cli.device("cpu") == torch.device("cpu") and node.calls == []


def test_on_an_nvswitch_node_the_preflight_names_fabricmanager(node):
    """An HGX board's GPUs reach each other through NVSwitches; until nvidia-fabricmanager has set
    up the fabric, CUDA does not start although torch and the driver match."""
    node(False, "13.0", ("580.82.07", "13.0"), nvswitches=4)
    message = device_error("cuda")
    assert "match, yet CUDA does not start" in message and "NVSwitches" in message
    assert "systemctl status nvidia-fabricmanager" in message
    # without NVSwitches (a PCIe node), the advice is the GPU's visibility
    node(False, "13.0", ("580.82.07", "13.0"), nvswitches=0)
    message = device_error("cuda")
    assert "fabricmanager" not in message and "CUDA_VISIBLE_DEVICES" in message


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="fakes a GPU node whose torch cannot use the GPU")
@pytest.mark.parametrize("argv", [
    ["train.py", "--model", "nowhere/model", "--data", "missing.jsonl"],
    ["sample.py", "--model", "nowhere/model", "--prompt", "hi"],
    ["serve.py", "--model", "nowhere/model"],
    ["-m", "tools.gpu_check"]], ids=lambda a: a[-1] if a[0] == "-m" else a[0])
def test_each_command_runs_the_preflight_first(tmp_path, argv):
    """A fake nvidia-smi on PATH makes this CPU machine a GPU node with an old driver, where this
    CPU build of torch cannot use the GPU: each command stops first (before the missing model or
    data), in one line, with exit code 1."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI}EOF\n")
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    choice = "cuda" if argv[0] == "-m" else "auto"
    assert proc.stderr.startswith(f"--device {choice}: no usable CUDA GPU")
    assert "driver 550.54.15 (CUDA 12.4)" in proc.stderr and "CPU build" in proc.stderr


# ----------------------------------------------------------------------------------------------
# Downloads: only a process that reads weights fetches *.safetensors

class Stop(Exception):
    pass


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, tiny_checkpoint):
    """huggingface_hub.snapshot_download serving the tiny checkpoint as "someone/tiny": each call
    copies the files its allow_patterns match into a fresh snapshot. Returns the patterns asked
    for."""
    import huggingface_hub
    from huggingface_hub import constants
    source, _ = tiny_checkpoint
    # where download_lock puts its lock files
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    asked = []

    def snapshot_download(repo, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        asked.append(tuple(allow_patterns))
        snapshot = tmp_path / "snapshots" / str(len(asked))
        snapshot.mkdir(parents=True)
        for name in os.listdir(source):
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                shutil.copy(os.path.join(source, name), snapshot)
        return str(snapshot)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return asked


def weights_fetched(patterns):
    return any(fnmatch.fnmatch("model.safetensors", p) for p in patterns)


@pytest.mark.parametrize("rank", ["0", "1", "3"])
def test_train_fetches_weights_on_rank_0_only_once_the_group_is_up(fake_hub, monkeypatch, rank):
    """train.py: before the process group forms, every rank fetches the config and tokenizer
    files only; then rank 0, which alone reads the weights (build_model broadcasts them), fetches
    them while the others wait (fetch_weights; under torchrun: test_train.py)."""
    monkeypatch.setenv("RANK", rank)

    def stop(*a, **kw):
        raise Stop
    monkeypatch.setattr(parallel, "init_distributed", stop)
    with pytest.raises(Stop):
        train.main(["--model", "someone/tiny", "--device", "cpu"])
    (patterns,) = fake_hub
    assert not weights_fetched(patterns) and "*.json" in patterns
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 1)  # one process: rank 0
    path = train.fetch_weights("someone/tiny", "metadata only", 1)
    assert weights_fetched(fake_hub[1]) and os.path.exists(os.path.join(path, "model.safetensors"))


@pytest.mark.parametrize("rank", [0, 1])
def test_every_tensor_parallel_rank_fetches_the_weights_it_reads(fake_hub, rank):
    """sample.py under torchrun: every rank reads its slice of every weight, so every rank fetches
    them (once per node: hf_checkpoint.download_lock)."""
    model = sample.load_model("someone/tiny", "cpu", torch.float32, tp=2, tp_rank=rank)
    (patterns,) = fake_hub
    assert weights_fetched(patterns) and model.model.layers[0].self_attn.n_kv_heads == 1


# ----------------------------------------------------------------------------------------------
# Collective timeouts

@pytest.mark.parametrize("script", ["sample", "eval", "serve", "train"])
def test_every_torchrun_script_takes_dist_timeout_min(script):
    import importlib
    module = importlib.import_module(script)
    argv = {"sample": ["--prompt", "hi"], "eval": [], "serve": [], "train": []}[script]
    assert module.parse_args(argv).dist_timeout_min == 60
    assert module.parse_args(argv + ["--dist-timeout-min", "240"]).dist_timeout_min == 240


def test_the_generation_process_group_gets_the_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, timeout: seen.update(b=backend, t=timeout))
    assert parallel.init_distributed("cpu", 240) == (torch.device("cpu"), 2, 1)
    assert seen == dict(b="gloo", t=datetime.timedelta(minutes=240))
