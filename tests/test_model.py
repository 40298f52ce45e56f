"""model.py against transformers' Qwen2ForCausalLM, the oracle, on tiny random checkpoints."""
import json
import os
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_hf_model

import model as M
from machinery import engine, hf_checkpoint


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def test_logits_match_transformers(tiny_checkpoint):
    path, hf = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 256, (3, 29), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(ids).logits) <= 1e-5


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 1), (8, 2)], ids=["mha", "mqa", "gqa4"])
def test_attention_head_layouts_match_transformers(tmp_path, heads, kv_heads):
    hf = tiny_hf_model(heads=heads, kv_heads=kv_heads)
    hf.save_pretrained(tmp_path)
    ours = hf_checkpoint.from_pretrained(str(tmp_path), dtype=torch.float32)
    ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(ids).logits) <= 1e-5


def test_real_vocab_size_and_keys(tmp_path):
    """One model with Qwen2.5's real 151,936-token vocabulary and tied embeddings, like 0.5B."""
    hf = tiny_hf_model(tie=True, vocab=151936, hidden=32, layers=1, heads=2, kv_heads=1)
    hf.save_pretrained(tmp_path)
    ours = hf_checkpoint.from_pretrained(str(tmp_path), dtype=torch.float32)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ids = torch.tensor([[151644, 872, 198, 9707, 151645]])
    with torch.no_grad():
        assert max_diff(ours(ids), hf(ids).logits) <= 1e-5


def test_batch_of_different_lengths_matches_transformers_padding(tiny_checkpoint):
    """Three documents of lengths 5, 11, 8: transformers runs them right-padded with an attention
    mask; we run them packed in one row, and as a cache prefill with per-row lengths."""
    path, hf = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    lengths = [5, 11, 8]
    docs = [torch.randint(0, 256, (n,)) for n in lengths]
    padded = torch.zeros(3, 11, dtype=torch.long)
    mask = torch.zeros(3, 11, dtype=torch.long)
    for i, d in enumerate(docs):
        padded[i, :len(d)], mask[i, :len(d)] = d, 1
    with torch.no_grad():
        ref = hf(padded, attention_mask=mask).logits
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        packed = ours(torch.cat(docs)[None], position_ids=positions)[0]
        pool = paged_pool(ours, torch.float32)
        seqs = [engine.Seq(d.tolist(), rows=[]) for d in docs]
        last = paged_forward(ours, pool, seqs)  # a prefill: the three packed, each attending alone
    starts = [0, 5, 16]
    for i, n in enumerate(lengths):
        assert max_diff(packed[starts[i]:starts[i] + n], ref[i, :n]) <= 1e-5
        assert max_diff(last[i], ref[i, n - 1]) <= 1e-5


def test_packed_rows_equal_documents_run_separately(tiny_checkpoint):
    path, _ = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    docs = [torch.randint(0, 256, (n,)) for n in (6, 9, 4, 12, 3)]
    # Row 0: docs 0, 1 and 2 then 1 padding token; row 1: docs 3 and 4 and 5 padding tokens.
    row0 = torch.cat([docs[0], docs[1], docs[2], torch.zeros(1, dtype=torch.long)])
    row1 = torch.cat([docs[3], docs[4], torch.zeros(5, dtype=torch.long)])
    pos0 = torch.cat([torch.arange(6), torch.arange(9), torch.arange(4), torch.arange(1)])
    pos1 = torch.cat([torch.arange(12), torch.arange(3), torch.arange(5)])
    with torch.no_grad():
        packed = ours(torch.stack([row0, row1]), position_ids=torch.stack([pos0, pos1]))
        alone = [ours(d[None])[0] for d in docs]
    for (row, start), ref in zip([(0, 0), (0, 6), (0, 15), (1, 0), (1, 12)], alone):
        assert max_diff(packed[row, start:start + len(ref)], ref) <= 1e-5


def paged_pool(model, dtype, block_size=4, blocks=64):
    return engine.BlockPool(model.cfg, blocks, block_size, model.cfg.num_key_value_heads, "cpu",
                            dtype)


def paged_forward(model, pool, seqs):
    """One forward as engine.Engine runs it: give each sequence the blocks its new tokens need,
    run the model on the paged cache, mark the tokens cached. Returns each sequence's last
    logits."""
    for s in seqs:
        while len(s.blocks) * pool.block_size < len(s.ids):
            s.blocks.append(pool.allocate())
    view = engine.PagedBatch(pool, seqs, "cpu")
    new_tokens = torch.tensor([t for s in seqs for t in s.ids[s.cached:]])
    logits = model(new_tokens.view(view.positions.shape), cache=view)
    for s in seqs:
        s.cached = len(s.ids)
    return logits


def test_cached_decoding_equals_full_forward(tiny_checkpoint):
    """Prefill rows of different lengths into 4-token blocks taken from the pool in shuffled
    order, then feed one token per step: every step's logits equal the full (uncached) forward."""
    path, _ = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(2))
    prompt_lengths = [4, 9, 1]
    with torch.no_grad():
        full = ours(ids)
        pool = paged_pool(ours, torch.float32)
        random.Random(0).shuffle(pool.free)  # blocks out of order, as after many rows came and went
        seqs = [engine.Seq(ids[b, :n].tolist(), rows=[]) for b, n in enumerate(prompt_lengths)]
        out = paged_forward(ours, pool, seqs)
        assert max_diff(out, full[torch.arange(3), torch.tensor(prompt_lengths) - 1]) <= 1e-5
        for step in range(10):
            for b, s in enumerate(seqs):
                s.ids.append(int(ids[b, len(s.ids)]))
            out = paged_forward(ours, pool, seqs)
            pos = torch.tensor(prompt_lengths) + step
            assert max_diff(out, full[torch.arange(3), pos]) <= 1e-5
    assert [len(s.blocks) for s in seqs] == [4, 5, 3]


def test_token_losses_and_gradients_match_plain_cross_entropy(tiny_checkpoint):
    path, _ = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 256, (2, 15))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = M.IGNORE
    labels[0, :6] = M.IGNORE
    chunked = ours(ids, labels=labels, ce_chunk=4)  # 4 is smaller than the 22 labelled positions
    chunked.sum().backward()
    grads = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    plain = F.cross_entropy(ours(ids).flatten(0, 1), labels.flatten(), reduction="none").view(2, 15)
    plain.sum().backward()
    assert max_diff(chunked, plain) <= 1e-5
    assert (chunked[labels == M.IGNORE] == 0).all()
    for n, p in ours.named_parameters():
        assert max_diff(grads[n], p.grad) <= 1e-5, n


def test_save_pretrained_loads_in_transformers(tiny_checkpoint, tmp_path):
    from transformers import Qwen2ForCausalLM
    path, hf = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 256, (2, 11))
    for shard_bytes in (5 << 30, 20_000):  # one file, then many shards with an index
        out = tmp_path / f"saved-{shard_bytes}"
        hf_checkpoint.save_pretrained(ours, str(out), max_shard_bytes=shard_bytes)
        sharded = os.path.exists(out / "model.safetensors.index.json")
        assert sharded == (shard_bytes == 20_000)
        reloaded = Qwen2ForCausalLM.from_pretrained(out).float().eval()
        again = hf_checkpoint.from_pretrained(str(out), dtype=torch.float32)
        with torch.no_grad():
            assert max_diff(reloaded(ids).logits, hf(ids).logits) <= 1e-5
            assert max_diff(again(ids), hf(ids).logits) <= 1e-5
        config = json.loads((out / "config.json").read_text())
        assert config["tie_word_embeddings"] == hf.config.tie_word_embeddings


def test_save_pretrained_copies_tokenizer_and_replaces_atomically(tiny_checkpoint, tmp_path):
    from conftest import TOKENIZER_DIR
    path, _ = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    out = tmp_path / "ckpt"
    hf_checkpoint.save_pretrained(ours, str(out), tokenizer_dir=TOKENIZER_DIR)
    # again: overwrite an existing checkpoint
    hf_checkpoint.save_pretrained(ours, str(out), tokenizer_dir=TOKENIZER_DIR)
    names = sorted(os.listdir(out))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= set(names)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no .tmp or .old left behind


def test_config_accepts_transformers_4_and_5_spellings(tmp_path):
    base = dict(model_type="qwen2", vocab_size=256, hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    v4 = dict(base, rope_theta=10000.0, torch_dtype="bfloat16")
    v5 = dict(base, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
              dtype="bfloat16")
    for i, raw in enumerate((v4, v5)):
        (tmp_path / f"{i}.json").write_text(json.dumps(raw))
        cfg = hf_checkpoint.read_config(str(tmp_path / f"{i}.json"))
        assert (cfg.rope_theta, cfg.torch_dtype, cfg.head_dim) == (10000.0, "bfloat16", 16)
    no_hidden_size = {k: v for k, v in v4.items() if k != "hidden_size"}
    (tmp_path / "bad.json").write_text(json.dumps(no_hidden_size))
    with pytest.raises(SystemExit, match="bad.json.*hidden_size"):
        hf_checkpoint.read_config(str(tmp_path / "bad.json"))
    # What a real Qwen2.5 config.json (written by transformers 4.x) carries besides
    real = dict(v4, sliding_window=131072, use_sliding_window=False, max_window_layers=21,
                rope_scaling=None, bos_token_id=151643, eos_token_id=151645, hidden_act="silu",
                use_cache=True)
    (tmp_path / "real.json").write_text(json.dumps(real))
    assert hf_checkpoint.read_config(str(tmp_path / "real.json")).eos_token_id == 151645
    for bad, error in ((dict(real, use_sliding_window=True), "use_sliding_window"),
                       (dict(real, rope_scaling={"type": "yarn", "factor": 4.0}), "rope scaling"),
                       (dict(real, model_type="llama"), "model_type"),
                       (dict(real, head_dim=32), "head_dim")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match=error):
            hf_checkpoint.read_config(str(tmp_path / "bad.json"))
    # Sizes the architecture cannot run, each named by its field (a head of 33 channels used to fail
    # inside the rotary embedding with "size of tensor a (33) must match ... (34)")
    for bad, error in ((dict(base, hidden_size=132), "must be even"),
                       (dict(base, num_attention_heads=3), "not a multiple of num_attention_heads"),
                       (dict(base, num_key_value_heads=3), "not a multiple of num_key_value_heads"),
                       (dict(base, vocab_size=0), "vocab_size must be a positive integer"),
                       (dict(base, num_hidden_layers="2"),
                        "num_hidden_layers must be a positive integer")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match=f"bad.json: .*{error}"):
            hf_checkpoint.read_config(str(tmp_path / "bad.json"))


# The published config.json values of every Qwen2.5-Instruct size (Hugging Face model cards).
QWEN25 = {
    "0.5B": (896, 4864, 24, 14, 2, 151936, True),
    "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
    "3B": (2048, 11008, 36, 16, 2, 151936, True),
    "7B": (3584, 18944, 28, 28, 4, 152064, False),
    "14B": (5120, 13824, 48, 40, 8, 152064, False),
    "32B": (5120, 27648, 64, 40, 8, 152064, False),
}


@pytest.mark.parametrize("size", QWEN25)
def test_every_qwen25_size_has_transformers_parameters(size, tmp_path):
    """Built on the meta device (no memory): same parameter names and shapes as transformers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    hidden, inter, layers, heads, kv, vocab, tie = QWEN25[size]
    raw = dict(model_type="qwen2", hidden_size=hidden, intermediate_size=inter,
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
               vocab_size=vocab, tie_word_embeddings=tie, rope_theta=1e6, torch_dtype="bfloat16",
               max_position_embeddings=32768)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = hf_checkpoint.read_config(str(tmp_path / "config.json"))
    with torch.device("meta"):
        ours = M.Qwen2(cfg)
        ref = Qwen2ForCausalLM(Qwen2Config(**raw))
    shapes = lambda model: {n: p.shape for n, p in model.named_parameters()}
    assert shapes(ours) == shapes(ref)
    if size == "0.5B":
        assert M.num_params(ours) == 494_032_768


def _corrupt(src, dst, edit):
    """Copy a checkpoint and rewrite its safetensors through `edit(dict) -> dict`."""
    import shutil
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    weights = os.path.join(dst, "model.safetensors")
    save_file(edit(load_file(weights)), weights)
    return str(dst)


def test_bad_checkpoints_raise_clear_errors(tiny_checkpoint, tmp_path):
    path, _ = tiny_checkpoint
    key = "model.layers.1.self_attn.k_proj.bias"
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        hf_checkpoint.from_pretrained(str(tmp_path / "no-such-dir"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(open(os.path.join(path, "config.json")).read())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        hf_checkpoint.from_pretrained(str(empty))
    missing = _corrupt(path, tmp_path / "missing",
                       lambda sd: {k: v for k, v in sd.items() if k != key})
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        hf_checkpoint.from_pretrained(missing)
    wrong = _corrupt(path, tmp_path / "wrong", lambda sd: {**sd, key: torch.zeros(7)})
    with pytest.raises(ValueError, match=r"k_proj\.bias has shape \(7,\), expected \(32,\)"):
        hf_checkpoint.from_pretrained(wrong)
    extra = _corrupt(path, tmp_path / "extra",
                     lambda sd: {**sd, "model.layers.9.foo": torch.zeros(1)})
    with pytest.raises(KeyError, match="unexpected tensor 'model.layers.9.foo'"):
        hf_checkpoint.from_pretrained(extra)


def test_bf16_logits_equal_transformers_bf16(tmp_path):
    """Same operations in the same order (fp32 norm statistics, fp32 rotary angles) give the same
    bf16 logits as transformers, not merely close ones."""
    from transformers import Qwen2ForCausalLM
    hf = tiny_hf_model(hidden=128, layers=4)
    hf.save_pretrained(tmp_path)
    ref = Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = hf_checkpoint.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        expected = ref(ids).logits
        assert max_diff(ours(ids), expected) <= 1e-6
        # the packed path (positions given, one document per row) takes the same SDPA kernel
        assert max_diff(ours(ids, position_ids=torch.arange(64)[None]), expected) <= 1e-6
        # a bf16 paged cache: prefill then single steps, within a bf16 rounding step of the full
        # forward
        pool = paged_pool(ours, torch.bfloat16, block_size=16)
        seqs = [engine.Seq(ids[b, :60].tolist(), rows=[]) for b in range(2)]
        paged_forward(ours, pool, seqs)
        for t in range(60, 64):
            for b, s in enumerate(seqs):
                s.ids.append(int(ids[b, t]))
            assert max_diff(paged_forward(ours, pool, seqs), expected[:, t]) <= 2e-2


def test_one_row_of_positions_serves_the_batch(tiny_checkpoint):
    path, hf = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    ids = torch.randint(0, 256, (3, 10))
    with torch.no_grad():
        assert max_diff(ours(ids, position_ids=torch.arange(10)[None]), hf(ids).logits) <= 1e-5


def test_an_idle_micro_batch_still_gives_every_parameter_a_gradient(tiny_checkpoint):
    """FSDP reduce-scatters every parameter's gradient on every rank: an idle rank (nothing to
    learn) must still produce one, the LM head's included, or the collectives fall out of step."""
    path, _ = tiny_checkpoint
    ours = hf_checkpoint.from_pretrained(path, dtype=torch.float32)
    losses = ours(torch.zeros(1, 1, dtype=torch.long), labels=torch.full((1, 1), M.IGNORE))
    losses.sum().backward()
    assert losses.sum().item() == 0
    assert all(p.grad is not None and (p.grad == 0).all() for p in ours.parameters())


def test_processes_resolving_one_hub_name_download_it_once(tmp_path, monkeypatch):
    """Three processes (torchrun's ranks, say, before any process group exists) ask for the same hub
    name at the same moment: one downloads, holding a lock in the hub cache; the others wait for it
    and then read the cache it filled. A stand-in hub takes the place of huggingface_hub's."""
    import multiprocessing
    import time

    import huggingface_hub
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot, log = tmp_path / "hub" / "snapshot", tmp_path / "downloads"

    def fake_snapshot_download(repo, allow_patterns=None, local_files_only=False):
        if not snapshot.exists():  # the cache is complete once `snapshot` exists
            if local_files_only:
                raise FileNotFoundError("not in the cache")
            with open(log, "a") as f:
                f.write(f"{repo}\n")
            # a download takes a while: without the lock, the others would start one too
            time.sleep(0.5)
            snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)

    ctx = multiprocessing.get_context("fork")  # the children inherit the stand-in hub
    start = ctx.Barrier(3)

    def rank(i):
        start.wait()
        (tmp_path / f"dir{i}").write_text(hf_checkpoint.checkpoint_dir("someone/tiny-model"))
    procs = [ctx.Process(target=rank, args=(i,)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "someone/tiny-model\n"
    assert [(tmp_path / f"dir{i}").read_text() for i in range(3)] == [str(snapshot)] * 3
