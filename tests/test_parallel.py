"""machinery/parallel.py's data x tensor parallel layout for generation, in one process: which
ranks form a replica, which questions each replica takes, how a stopped run's part files are
recovered, --tp's default and its bad values. The runs under torchrun that check it against one
process are in test_sample.py and test_eval.py."""
import json

import pytest
import torch
from conftest import tiny_hf_model

import sample
from machinery import hf_checkpoint, parallel, plan


@pytest.fixture
def replica(monkeypatch):
    """Make this process replica r of dp, as set_layout would under torchrun."""
    def place(r, dp):
        monkeypatch.setattr(parallel, "layout", parallel.Layout(2, dp, r, 0))
    return place


def test_a_replica_is_tp_consecutive_ranks():
    layouts = [parallel.layout_of(8, rank, 2) for rank in range(8)]
    assert [(p.replica, p.tp_rank) for p in layouts] == [(r // 2, r % 2) for r in range(8)]
    assert {(p.tp, p.dp) for p in layouts} == {(2, 4)}
    assert parallel.layout_of(16, 15, 8) == parallel.Layout(8, 2, 1, 7)  # a replica per node
    assert parallel.layout_of(4, 3, 1) == parallel.Layout(1, 4, 3, 0)
    with pytest.raises(SystemExit, match=r"--tp 3 does not divide the 4 process\(es\)"):
        parallel.layout_of(4, 0, 3)


def test_the_deal_gives_every_item_to_one_replica_and_keeps_a_key_together(replica):
    items = [("aime", q, s) for s in ("8", "auto") for q in range(5)]
    shares = []
    for r in range(3):
        replica(r, 3)
        shares.append(parallel.deal(items))
    assert shares[1] == items[1::3] and sorted(sum(shares, [])) == sorted(items)
    by_question = []
    for r in range(3):
        replica(r, 3)
        by_question.append(parallel.deal(items, key=lambda t: t[1]))
    # question q (in order of first appearance) goes to replica q % 3, with both its settings
    assert [sorted({t[1] for t in share}) for share in by_question] == [[0, 3], [1, 4], [2]]
    assert sorted(sum(by_question, [])) == sorted(items)
    assert all(len(share) == 2 * len({t[1] for t in share}) for share in by_question)


def test_each_replica_writes_its_own_part_and_one_replica_the_output(monkeypatch, tmp_path):
    out = str(tmp_path / "s.jsonl")
    for place, name in ((parallel.Layout(2, 2, 1, 0), out + ".part1"),
                        (parallel.Layout(2, 1, 0, 0), out),
                        (parallel.Layout(2, 2, 1, 1), "/dev/null")):  # a replica's second rank
        monkeypatch.setattr(parallel, "layout", place)
        with parallel.open_output(out) as f:
            assert f.name == name and parallel.writes() == (name != "/dev/null")


def test_a_stopped_runs_parts_join_the_output_once(tmp_path, capsys):
    """Rows in the parts that the output lacks are appended once; rows it has (a stop between
    merging and removing the parts) are not; torn last lines, of the output and of a part, are
    cut; the parts go."""
    row = lambda i: json.dumps({"id": i, "text": f"t{i}"}) + "\n"
    out = tmp_path / "s.jsonl"
    out.write_text(row(0) + row(1) + '{"id": 9, "te')
    (tmp_path / "s.jsonl.part0").write_text(row(1) + row(2))
    (tmp_path / "s.jsonl.part1").write_text(row(3) + row(2) + '{"id"')
    (tmp_path / "s.jsonl.parts-notes").write_text("not a part")
    parallel.recover_parts(str(out))
    assert out.read_text() == row(0) + row(1) + row(2) + row(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.jsonl.parts-notes"]
    assert "2 row(s) recovered" in capsys.readouterr().err
    parallel.recover_parts(str(out))  # no parts: nothing changes
    assert out.read_text() == row(0) + row(1) + row(2) + row(3)


def test_tps_default_is_the_smallest_degree_whose_plan_fits():
    """Against the plan's own table (test_engine.py checks it by hand): 32B needs 2 H100s for one
    32K row, so 8 GPUs are 4 replicas and 16 are 8; a 1.5B fits one GPU, so 8 GPUs are 8
    replicas; the degree divides the GPUs and the KV heads."""
    cfg = hf_checkpoint.known_shape("simplescaling/s1-32B")
    fits = {t: plan.generation_plan(cfg, t, 32768, 64, 79.1)["rows that fit"] for t in (1, 2)}
    assert fits[1] == 0 and fits[2] >= 1
    assert plan.smallest_fitting_tp("simplescaling/s1-32B", 8, 32768, 64, 79.1) == 2
    assert plan.smallest_fitting_tp("simplescaling/s1-32B", 16, 32768, 64, 79.1) == 2
    assert plan.smallest_fitting_tp("Qwen/Qwen2.5-1.5B-Instruct", 8, 32768, 64, 79.1) == 1
    assert plan.tp_degrees(cfg, 12) == [1, 2, 4]  # 8 KV heads
    # nothing fits 1 GPU: the largest degree, which check_fits then refuses in one line
    assert plan.smallest_fitting_tp("simplescaling/s1-32B", 1, 32768, 64, 79.1) == 1
    with pytest.raises(SystemExit, match=r"does not fit 1 GPU\(s\) \(--tp 1\)"):
        plan.check_fits("simplescaling/s1-32B", 1, 32768, 64, 79.1)


def test_the_dry_run_prints_the_layout(capsys):
    assert plan.print_generation_plan("simplescaling/s1-32B", 16, 32768, 64, 79.1) == 2
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("16 GPUs: TP 2 x DP 8 (the smallest TP whose plan fits): 8 replica(s)")
    assert plan.print_generation_plan("simplescaling/s1-32B", 8, 32768, 64, 79.1, tp=4) == 4
    assert capsys.readouterr().out.splitlines()[-1].startswith("8 GPUs: TP 4 x DP 2 (--tp 4)")
    assert plan.print_generation_plan("simplescaling/s1-32B", 8, 32768, 64, 79.1, tp=1) is None
    assert "Does not fit: --tp 1 on 8 GPUs" in capsys.readouterr().out
    for tp, message in ((3, "--tp 3 does not divide --gpus 8"),
                        (16, "--tp 16 does not divide --gpus 8")):
        with pytest.raises(SystemExit, match=message):
            plan.print_generation_plan("simplescaling/s1-32B", 8, 32768, 64, 79.1, tp=tp)
    with pytest.raises(SystemExit, match="--tp 16 does not divide the 8 KV heads"):
        plan.print_generation_plan("simplescaling/s1-32B", 16, 32768, 64, 79.1, tp=16)


def test_a_bad_tp_is_one_line_before_any_weight_is_read(tmp_path):
    path = str(tmp_path / "m")
    tiny_hf_model(kv_heads=2).save_pretrained(path)
    with pytest.raises(SystemExit, match=r"--tp 2 does not divide the 1 process\(es\)"):
        sample.load_for_generation(path, "cpu", tp=2)
    with pytest.raises(SystemExit, match="--tp 4 does not divide the 2 KV heads of --model"):
        sample.load_model(path, torch.device("cpu"), torch.float32, tp=4, tp_rank=0)
