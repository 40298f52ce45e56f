"""The two layers (README, "Files"): the stage scripts at the root, the machinery below them in
machinery/, the tools that run the stages in tools/. Data flows downward: a stage imports no other
stage, except sample.py, and that only to generate; the machinery imports no stage (model.py, the
architecture, sits at the root for the reader but imports nothing of ours). Read from the sources'
imports, at the top of a file or inside a function."""
import ast
import glob
import os

import pytest
from conftest import ROOT

STAGES = {"prepare", "curate", "train", "sample", "eval", "serve", "demo"}  # what a user runs
MODEL = "model"
MACHINERY = {"engine", "parallel", "plan", "hf_checkpoint", "chat", "benchmarks", "sources", "api", "jsonl", "cli",
             "mini"}
TOOLS = {"bench", "gpu_check", "check_python"}
# what a stage may take from sample.py: generation, what a generated row is read with, and the
# Setting that says how to generate (with its constructors and its default tries)
GENERATION = {"generate", "rejection_sample", "load_for_generation", "make_rows", "resolve_dtype",
              "answer_span", "Setting", "setting_from", "setting_fields", "MAX_TRIES"}


def files(folder=""):
    return {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, folder, "*.py"))
            if not p.endswith("__init__.py")}


def imports(path):
    """(imported module, line) for every import of a project file, and the names used as sample.X.
    `from machinery import a, b` and `from machinery.a import x` count as importing a (and b)."""
    tree, found, used = ast.parse(open(path).read()), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[-1] if a.name.split(".")[0] in ("machinery", "tools") else a.name,
                       node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] in ("machinery", "tools"):
                found += [(parts[1], node.lineno)] if len(parts) > 1 else [(a.name, node.lineno) for a in node.names]
            else:
                found.append((parts[0], node.lineno))
            if node.module == "sample":
                used |= {a.name for a in node.names}
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sample":
            used.add(node.attr)
    return found, used


def test_every_file_is_in_its_layer():
    assert set(files()) == STAGES | {MODEL}, sorted(files())
    assert set(files("machinery")) == MACHINERY, sorted(files("machinery"))
    assert set(files("tools")) == TOOLS, sorted(files("tools"))


LAYERS = {**{n: "stage" for n in STAGES}, MODEL: "model", **{n: "machinery" for n in MACHINERY},
          **{n: "tool" for n in TOOLS}}
PATHS = {**files(), **files("machinery"), **files("tools")}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_data_flows_downward(name):
    found, used = imports(PATHS[name])
    project = [(m, line) for m, line in found if m in LAYERS and m != name]
    layer = LAYERS[name]
    if layer == "tool":  # the tools run the stages: they may import anything
        return
    allowed = {"stage": MACHINERY | {MODEL} | ({"sample"} if name not in ("train", "sample") else set()),
               "model": set(), "machinery": MACHINERY | {MODEL}}[layer]
    if name == "demo":  # demo.py runs the stages as commands, never imports them
        allowed = MACHINERY
    wrong = [f"{name}.py:{line} imports {m}.py" for m, line in project if m not in allowed]
    assert not wrong, wrong
    if layer == "stage" and any(m == "sample" for m, _ in project):
        assert used <= GENERATION, f"{name}.py uses sample.{sorted(used - GENERATION)}: not generation"


def test_the_rule_catches_a_stage_importing_a_stage(tmp_path):
    """The check itself can fail: a file that imports train.py and reads sample's engine, and a
    machinery file that imports a stage."""
    bad = tmp_path / "prepare.py"
    bad.write_text("import train\nimport sample\nsample.Row\nfrom machinery.jsonl import read_jsonl\n")
    found, used = imports(str(bad))
    assert ("train", 1) in found and ("jsonl", 4) in found and used == {"Row"} and not used <= GENERATION
    bad.write_text("from machinery import chat, engine\nimport eval as E\n")
    assert imports(str(bad))[0] == [("chat", 1), ("engine", 1), ("eval", 2)]
