"""The two layers (README, Layout): stage scripts on top, library files below. Data flows downward:
a stage imports no other stage, except sample.py, and that only to generate; a library file
imports no stage. Read from the sources' imports (at the top of a file or inside a function)."""
import ast
import glob
import os

import pytest
from conftest import ROOT

STAGES = {"prepare", "curate", "train", "sample", "eval", "serve"}
TOOLS = {"demo", "bench", "gpu_check"}  # they run the stages, so they may import them
# what a stage may take from sample.py: generation, and what a generated row is read with
GENERATION = {"generate", "rejection_sample", "load_for_generation", "make_rows", "resolve_dtype", "answer_span"}


def modules():
    return {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "*.py"))}


def imports(path):
    """(imported module, line) for every import of a project file, and the names used as sample.X."""
    tree, found, used = ast.parse(open(path).read()), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], node.lineno))
            if node.module == "sample":
                used |= {a.name for a in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sample":
            used.add(node.attr)
    return found, used


def test_every_file_is_placed_in_a_layer():
    library = set(modules()) - STAGES - TOOLS
    assert library == {"model", "engine", "parallel", "plan", "hf_checkpoint", "chat", "benchmarks", "api", "jsonl",
                       "cli", "mini", "sources"}, library


@pytest.mark.parametrize("name", sorted(modules()))
def test_data_flows_downward(name):
    files = modules()
    found, used = imports(files[name])
    project = [(m, line) for m, line in found if m in files and m != name]
    if name in TOOLS:
        return
    if name in STAGES:
        allowed = set(files) - STAGES | ({"sample"} if name != "train" else set())
    else:  # a library file: other library files only
        allowed = set(files) - STAGES - TOOLS
    wrong = [f"{name}.py:{line} imports {m}.py" for m, line in project if m not in allowed]
    assert not wrong, wrong
    if name in STAGES and any(m == "sample" for m, _ in project):
        assert used <= GENERATION, f"{name}.py uses sample.{sorted(used - GENERATION)}: not generation"


def test_the_rule_catches_a_stage_importing_a_stage(tmp_path):
    """The check itself can fail: a file that imports train.py and reads sample's engine."""
    bad = tmp_path / "prepare.py"
    bad.write_text("import train\nimport sample\nsample.Row\n")
    found, used = imports(str(bad))
    assert ("train", 1) in found and used == {"Row"} and not used <= GENERATION
