"""make's install, with stand-in interpreters and a stand-in pip (no network, nothing installed):
the Python check that runs before anything is downloaded, and make venv-cu12, which installs torch
from PyTorch's CUDA 12 indexes in order, then the rest."""
import subprocess
import sys

from conftest import ROOT


def script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def make(target, python, venv):
    proc = subprocess.run(["make", "-s", target, f"PYTHON={python}", f"VENV={venv}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    ours = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    return proc, ours


def posing_python(tmp_path, setup):
    """This Python, made to look otherwise to the script it runs (setup: Python statements)."""
    run = f"{setup}; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return script(tmp_path / "python3", f"exec {sys.executable} -c \"import runpy, sys; {run}\" "
                                        "\"$@\"\n")


def test_make_refuses_python_3_10_in_one_line_before_any_download(tmp_path):
    """Ubuntu 22.04's python3 is 3.10: pip would fetch torch, then find no transformers 5.23.0."""
    python = posing_python(tmp_path, "sys.version_info = (3, 10, 12, 'final', 0)")
    venv = tmp_path / "venv"
    proc, ours = make(f"{venv}/installed", python, venv)
    assert proc.returncode != 0 and len(ours) == 1, proc.stderr
    assert "is Python 3.10.12; requirements.txt needs 3.11 or newer" in ours[0]
    assert "make PYTHON=python3.11" in ours[0]
    assert not venv.exists()  # stopped before python -m venv


def test_make_names_python3_venv_when_ensurepip_is_missing(tmp_path):
    """Debian and Ubuntu ship ensurepip, which venv needs, in python3-venv."""
    python = posing_python(tmp_path, "sys.modules['ensurepip'] = None")  # import fails
    venv = tmp_path / "venv"
    proc, ours = make(f"{venv}/installed", python, venv)
    assert proc.returncode != 0 and len(ours) == 1, proc.stderr
    minor = "%d.%d" % sys.version_info[:2]
    assert "cannot make a venv (no ensurepip module)" in ours[0]
    assert f"apt install python{minor}-venv (or python3-venv)" in ours[0]
    assert not venv.exists()


def venv_maker(tmp_path, missing):
    """A python3 whose `-m venv DIR` makes DIR/bin/pip, a pip that logs each call and finds no
    torch on the indexes named in `missing`; anything else (the version check) runs this Python."""
    log = tmp_path / "pip.log"
    cases = "".join(f"  *whl/{cu}*) exit 1;;\n" for cu in missing)
    pip = script(tmp_path / "pip", f'echo "$*" >> {log}\ncase "$*" in\n{cases}esac\n')
    venv_python = script(tmp_path / "venv-python", "echo torch 2.13.0+cu128 for CUDA 12.8\n")
    python = script(tmp_path / "python3",
                    'if [ "$1 $2" = "-m venv" ]; then\n'
                    f'  mkdir -p "$3/bin" && cp {pip} "$3/bin/pip" && cp {venv_python} '
                    '"$3/bin/python"; exit\nfi\n'
                    f'exec {sys.executable} "$@"\n')
    return python, log


def test_venv_cu12_installs_torch_from_the_first_cuda_12_index_that_has_it_then_the_rest(
        tmp_path):
    python, log = venv_maker(tmp_path, missing=["cu129"])
    venv = tmp_path / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "old-cuda13-torch").write_text("")  # a fresh venv: the old one goes
    proc, ours = make("venv-cu12", python, venv)
    assert proc.returncode == 0 and ours == [], proc.stderr
    calls = log.read_text().splitlines()
    flags = "install -q --disable-pip-version-check"
    assert calls == [f"{flags} torch==2.13.0 --index-url https://download.pytorch.org/whl/cu129",
                     f"{flags} torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128",
                     f"{flags} -r requirements.txt"]
    assert "torch 2.13.0+cu128 for CUDA 12.8" in proc.stdout
    assert (venv / "installed").exists() and not (venv / "lib").exists()


def test_venv_cu12_stops_in_one_line_when_no_cuda_12_index_has_torch(tmp_path):
    python, log = venv_maker(tmp_path, missing=["cu129", "cu128", "cu126"])
    venv = tmp_path / "venv"
    proc, ours = make("venv-cu12", python, venv)
    assert proc.returncode != 0 and len(ours) == 1, proc.stderr
    assert ours[0].startswith("no torch 2.13.0 in PyTorch's indexes cu129 cu128 cu126")
    assert "upgrade the NVIDIA driver to R580 or newer" in ours[0]
    assert [c.split("/")[-1] for c in log.read_text().splitlines()] == ["cu129", "cu128", "cu126"]
    assert not (venv / "installed").exists()  # nor anything else
