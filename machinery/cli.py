"""cli.py: what every stage's command line shares.

Flag types that check their range, so that a bad value exits 2 with argparse's one line naming the
flag ("argument --epochs: must be at least 1, got 0"), before any model or data is loaded. And
main(), which runs a stage so that a missing or unreadable file is one line on stderr, not a
traceback. Errors the stages detect themselves are a SystemExit with one line, which Python prints
as such. And device(), --device resolved, which on a GPU node whose torch cannot use the GPU stops
first with one line naming torch's CUDA, the driver's and what to install, rather than running on
the CPU.
"""
import argparse
import math
import sys


def _parse(text, kind):
    try:
        x = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return x


def at_least(lo, kind=int):
    """A number >= lo."""
    def check(text):
        x = _parse(text, kind)
        if x < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {text}")
        return x
    return check


def between(lo, hi, kind=float):
    """A number in [lo, hi]."""
    def check(text):
        x = _parse(text, kind)
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {text}")
        return x
    return check


def above(lo, kind=float):
    """A number > lo (a learning rate, a size in GiB)."""
    def check(text):
        x = _parse(text, kind)
        if not x > lo:
            raise argparse.ArgumentTypeError(f"must be more than {lo}, got {text}")
        return x
    return check


def budget(text):
    """A thinking budget: 'auto' (the harness's: the context less the prompt, the forced answer
    header and 100 tokens for the answer) or tokens >= 1."""
    return text if text == "auto" else at_least(1)(text)


def add_dry_run_flags(p, gpus):
    """The flags of a stage's --dry-run (train.py, sample.py, eval.py: plan.py's plans)."""
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory plan per GPU and exit (no weights loaded)")
    p.add_argument("--gpus", type=at_least(1), default=gpus, help="--dry-run: GPUs to plan for")
    p.add_argument("--gpu-memory-gib", type=above(0), default=79.1,
                   help="--dry-run: memory per GPU; an \"80 GB\" H100 has 85.0e9 bytes, "
                        "of which torch reports 79.1 GiB")


def add_tp_flag(p):
    """--tp, for every stage that generates under torchrun (parallel.py's layout)."""
    p.add_argument("--tp", type=at_least(1), default=None,
                   help="torchrun: processes per model replica (tensor parallel; it must divide "
                        "the processes and the model's KV heads); the other processes are "
                        "replicas, each taking its share of the questions. Default: on GPUs the "
                        "smallest degree whose memory plan fits (--dry-run shows it), on a CPU 1")


def main(run):
    """Run a stage's main(); a file the user named that is missing, a directory, unreadable or not
    text becomes one line on stderr and exit code 1; Ctrl-C, exit code 130 without a traceback
    (every output is appended a line at a time or renamed into place, so a rerun resumes)."""
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.filename is not None:
            sys.exit(f"{e.filename}: {e.strerror}")
        if isinstance(e, FileNotFoundError):  # hf_checkpoint's, chat's: the message names the path
            sys.exit(str(e))
        raise
    except UnicodeDecodeError as e:
        sys.exit(f"an input file is not UTF-8 text ({e})")


# ----------------------------------------------------------------------------------------------
# --device: which device, and on a GPU node, why CUDA does not work when it does not

def nvidia_smi():
    """(driver version, highest CUDA version the driver runs) from nvidia-smi's header, e.g.
    ("550.54.15", "12.4"); None when nvidia-smi is missing or fails (no NVIDIA driver here)."""
    import re
    import subprocess
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    driver, cuda = (re.search(rf"{key} Version:\s*([\d.]+)", text) for key in ("Driver", "CUDA"))
    return (driver and driver.group(1), cuda and cuda.group(1)) if driver or cuda else None


# Where a node shows its NVSwitches (HGX boards of 8 GPUs): the nvswitch driver's devices
NVSWITCH_PATHS = ("/proc/driver/nvidia-nvswitch/devices/*", "/dev/nvidia-nvswitch[0-9]*")


def has_nvswitch():
    import glob
    return any(glob.glob(pattern) for pattern in NVSWITCH_PATHS)


def cuda_problem(torch_cuda, smi):
    """Why torch cannot use this node's GPU, and what to install instead (one line).
    torch_cuda: torch.version.cuda (None for a CPU build of torch); smi: nvidia_smi()."""
    if smi is None:
        return "no NVIDIA driver on this machine (nvidia-smi is missing or failed)"
    driver, driver_cuda = smi
    need, have = (int((v or "0").split(".")[0]) for v in (torch_cuda, driver_cuda))
    # PyPI's torch 2.13.0 is built for CUDA 13 (R580 drivers); make venv-cu12 installs PyTorch's
    # CUDA 12 build of it, for the R525-R575 drivers most rented nodes run
    cu12 = "run `make venv-cu12` for a torch built for CUDA 12 (docs/gpu.md, 'An older driver')"
    if torch_cuda is None:
        fix = (cu12 if have == 12 else "reinstall the pinned torch from PyPI, whose Linux wheel is "
               "the CUDA 13.0 build (docs/gpu.md, 'On a GPU node')")
        return (f"this torch is a CPU build, on a node with NVIDIA driver {driver} "
                f"(CUDA {driver_cuda}): {fix}")
    # a driver runs every CUDA of its major version and the ones before (minor-version
    # compatibility)
    if have < need:
        branch = {12: "R525", 13: "R580"}.get(need, "a newer")
        return (f"torch is built for CUDA {torch_cuda} but NVIDIA driver {driver} runs "
                f"CUDA {driver_cuda} at most: upgrade the driver (CUDA {need}.x needs {branch} or "
                f"newer)" + (f" or {cu12}" if have == 12 else ""))
    if has_nvswitch():  # CUDA reports "system not yet initialized" until the fabric is set up
        return (f"torch (CUDA {torch_cuda}) and NVIDIA driver {driver} (CUDA {driver_cuda}) match, "
                "yet CUDA does not start, and this node has NVSwitches: CUDA starts only once "
                "nvidia-fabricmanager, of the driver's exact version, runs "
                "(systemctl status nvidia-fabricmanager)")
    return (f"torch (CUDA {torch_cuda}) and NVIDIA driver {driver} (CUDA {driver_cuda}) match, "
            "yet CUDA does not start: check that the GPU is visible (nvidia-smi lists it; "
            "CUDA_VISIBLE_DEVICES; a container's --gpus)")


def device(choice):
    """--device auto|cuda|cpu as a torch.device. cpu is asked for by name. cuda, and auto on a node
    with an NVIDIA driver, must get a working GPU: where torch cannot use it (no driver, a CPU build
    of torch, a driver older than torch's CUDA) this stops with one line that names torch's CUDA,
    the driver and what to install, before anything is loaded. auto without a driver (a laptop,
    CI) is the CPU."""
    import torch
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    smi = nvidia_smi()
    if choice == "auto" and smi is None:
        return torch.device("cpu")
    sys.exit(f"--device {choice}: no usable CUDA GPU (torch {torch.__version__}, "
             f"torch.version.cuda {torch.version.cuda}): {cuda_problem(torch.version.cuda, smi)}. "
             "--device cpu runs on the CPU.")
