"""sample.py's engine (paged KV cache, continuous batching, preemption, forks) against a naive
decoder that recomputes the whole sequence for every token, and its sharing against running every
setting alone. Plus the memory plan against a hand computation."""
import sys

import pytest
import torch
from conftest import ROOT, run, tiny_hf_model

import sample
from machinery import chat, engine, hf_checkpoint, plan

QUESTIONS = ["What is 2+3?", "Name a prime larger than ten, please.", "Why?",
             "A much longer question " * 8]
# caps far apart, no cap at all (runs to the context), and "Wait"s: rows of very different lengths
SETTINGS = [dict(max_thinking_tokens=2, num_ignore=0), dict(max_thinking_tokens=40, num_ignore=0),
            dict(max_thinking_tokens=None, num_ignore=0),
            dict(max_thinking_tokens="auto", num_ignore=2)]
MAX_TOKENS = 300


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-engine")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=3).save_pretrained(path)
    tokenizer = chat.build_byte_tokenizer(str(path))
    model = hf_checkpoint.from_pretrained(str(path), dtype=torch.float32)
    # louder delimiters: some rows end their thinking (and "Wait") by themselves
    with torch.no_grad():
        for token in (chat.IM_START, chat.IM_END):
            model.lm_head.weight[tokenizer.encode(token, add_special_tokens=False)[0]] *= 4
    return model, tokenizer


@torch.no_grad()
def naive(model, tokenizer, question, setting, max_tokens):
    """The reference: budget forcing (the same Row.feed) with no cache, no batch, no pool: the
    whole sequence goes through the model for every token."""
    ids = sample.special_ids(tokenizer, "Wait")
    prompt = tokenizer.encode(chat.prompt_text(question) + chat.completion_text(),
                              add_special_tokens=False)
    row = sample.Row(prompt_len=len(prompt), max_len=max_tokens, special=ids,
                     ignores_left=setting["num_ignore"], budget=setting["max_thinking_tokens"])

    def greedy():  # the harness's min_tokens=1: a thinking round cannot end on its first token
        logits = model(torch.tensor([prompt + row.tokens]))[0, -1, :len(tokenizer)]
        if row.round_start and row.phase == "think":
            logits[list(ids["stops"])] = float("-inf")
        return int(logits.argmax())

    while row.prompt_len + len(row.tokens) < max_tokens:
        forced = bool(row.forced)
        fed = row.feed(row.forced.popleft() if forced else greedy(), not forced)
        row.tokens.append(fed if fed is not None else row.feed(greedy(), True))
        if row.phase == "done":
            break
    return tokenizer.decode(row.tokens, skip_special_tokens=False)


def one_row_gb(model, max_tokens, block_size=16):
    per_token = plan.kv_bytes_per_token(model.cfg, model.cfg.num_key_value_heads, 4)
    return -(-max_tokens // block_size) * block_size * per_token / 1e9


def test_engine_equals_the_naive_reference_shared_alone_and_preempted(tiny):
    model, tokenizer = tiny
    expected = [naive(model, tokenizer, q, s, MAX_TOKENS) for q in QUESTIONS for s in SETTINGS]
    lengths = [len(tokenizer.encode(t, add_special_tokens=False)) for t in expected]
    assert max(lengths) >= 10 * min(lengths)  # the workload the engine must batch: rows 10x apart
    assert {"natural", "capped", "length"} <= {o["ended"] for o in sample.generate(
        model, tokenizer, QUESTIONS, settings=SETTINGS, max_tokens=MAX_TOKENS, progress=False)}
    kw = dict(settings=SETTINGS, max_tokens=MAX_TOKENS, progress=False)
    shared, alone, squeezed = {}, {}, {}
    texts = lambda outs: [o["text"] for o in outs]
    assert texts(sample.generate(model, tokenizer, QUESTIONS, stats=shared, **kw)) == expected
    alone_outs = sample.generate(model, tokenizer, QUESTIONS, share=False, batch_size=3,
                                 stats=alone, **kw)
    assert texts(alone_outs) == expected
    # a pool of 2.5 full rows for 16 rows: the newest sequences are preempted and recomputed
    outs = sample.generate(model, tokenizer, QUESTIONS, share=False, stats=squeezed,
                           kv_memory_gb=2.5 * one_row_gb(model, MAX_TOKENS), **kw)
    assert texts(outs) == expected and squeezed["preempted"] > 0
    assert shared["forks"] > 0 and shared["fed"] < alone["fed"] < squeezed["fed"]


def fed_tokens(prompt_lengths, outs_by_question):
    """What a shared run must feed: each prompt once, then one token per distinct prefix of the
    rows' fed tokens (a trie). A row feeds all its tokens except a closing <|im_end|>."""
    total = sum(prompt_lengths)
    for outs in outs_by_question:
        prefixes = set()
        for tokens, finished in outs:
            fed = tokens[:len(tokens) - finished]
            prefixes.update(tuple(fed[:k]) for k in range(1, len(fed) + 1))
        total += len(prefixes)
    return total


def run_with_tokens(model, tokenizer, questions, **kw):
    rows = {}
    outs = sample.generate(model, tokenizer, questions,
                           on_token=lambda r: rows.__setitem__(r.index, r), **kw)
    return outs, [rows[i].tokens for i in range(len(outs))]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_shared_sweep_feeds_each_distinct_prefix_once_and_equals_separate_runs(tiny, temperature):
    model, tokenizer = tiny
    kw = dict(max_tokens=MAX_TOKENS, progress=False, temperature=temperature, seed=7)
    n = 1 if temperature == 0 else 3
    stats = {}
    outs, tokens = run_with_tokens(model, tokenizer, QUESTIONS, settings=SETTINGS, n=n,
                                   stats=stats, **kw)
    per_q = n * len(SETTINGS)
    prompts = [len(tokenizer.encode(o["prompt"], add_special_tokens=False)) for o in outs[::per_q]]
    rows = [[(tokens[i], outs[i]["finished"]) for i in range(q * per_q, (q + 1) * per_q)]
            for q in range(len(QUESTIONS))]
    assert stats["fed"] == fed_tokens(prompts, rows)
    for j, setting in enumerate(SETTINGS):  # setting by setting, run alone: the same text
        alone = sample.generate(model, tokenizer, QUESTIONS, n=n, **setting, **kw)
        assert [o["text"] for o in alone] == [outs[q * per_q + i * len(SETTINGS) + j]["text"]
                                              for q in range(len(QUESTIONS)) for i in range(n)]
    if temperature > 0:  # samples differ from each other, and from another seed
        assert len({o["text"] for o in outs[:per_q:len(SETTINGS)]}) > 1
        other = sample.generate(model, tokenizer, QUESTIONS, settings=SETTINGS, n=n,
                                **dict(kw, seed=8))
        assert [o["text"] for o in other] != [o["text"] for o in outs]


def test_sweep_on_a_known_model_forks_where_settings_part(bigram):
    """The bigram model thinks "abc" then ends. Caps 1 and 2 fork inside "abc"; no cap and Wait x1,
    x2 share "abc", part at its end, and Wait x1 and x2 part at the second end."""
    model, tokenizer = bigram
    settings = [dict(max_thinking_tokens=c, num_ignore=k)
                for c, k in ((1, 0), (2, 0), (None, 0), ("auto", 1), ("auto", 2))]
    stats = {}
    outs, tokens = run_with_tokens(model, tokenizer, ["q"], settings=settings, max_tokens=300,
                                   stats=stats, progress=False)
    assert [o["thinking"] for o in outs] == ["a", "ab", "abc", "abcWaitabc", "abcWaitabcWaitabc"]
    assert all(o["finished"] for o in outs) and stats["forks"] == 4
    prompt = len(tokenizer.encode(outs[0]["prompt"], add_special_tokens=False))
    assert stats["fed"] == fed_tokens([prompt],
                                      [[(t, o["finished"]) for t, o in zip(tokens, outs)]])
    separate = {}
    sample.generate(model, tokenizer, ["q"], settings=settings, max_tokens=300, stats=separate,
                    share=False, progress=False)
    assert separate["fed"] == 5 * prompt + sum(o["generated_tokens"] - o["finished"] for o in outs)


def test_blocks_return_to_the_pool_and_rejection_sampling_retries(tiny):
    model, tokenizer = tiny
    ids = sample.special_ids(tokenizer, "Wait")
    runner = engine.Engine(model, MAX_TOKENS, max_rows=12, vocab_size=len(tokenizer),
                           kv_memory_gb=3 * one_row_gb(model, MAX_TOKENS))
    _, prompts = sample.encode_prompts(tokenizer, QUESTIONS, MAX_TOKENS)
    rows = []
    for p in prompts:
        group = [sample.Row(prompt_len=len(p), max_len=MAX_TOKENS, special=ids, budget=c,
                            ignores_left=0, temperature=1.0, seed=i)
                 for i, c in enumerate((3, 50, None))]
        rows += group
        runner.add(p, group)
    done, peak = [], 0
    while runner.busy():
        done += runner.step()
        peak = max(peak, len(runner.running))
    assert peak <= 12  # forks never make more sequences than the rows that were admitted
    assert sorted(map(id, done)) == sorted(map(id, rows))
    assert runner.forks > 0 and runner.preempted > 0
    assert runner.pool.refs == [0] * len(runner.pool.refs)
    assert len(runner.pool.free) == len(runner.pool.refs)

    # greedy retries are all the same: every try is rejected, and each try feeds its prompt and its
    # tokens
    stats = {}
    outs = sample.rejection_sample(model, tokenizer, QUESTIONS, max_thinking_tokens=5, max_tries=3,
                                   temperature=0.0, max_tokens=MAX_TOKENS, progress=False,
                                   stats=stats)
    assert all(o["tries"] == 3 and not o["accepted"] for o in outs)
    prompt_tokens = sum(map(len, prompts))
    assert stats["fed"] == 3 * prompt_tokens + sum(3 * (o["generated_tokens"] - o["finished"])
                                                   for o in outs)
    # a pool of 1.2 rows: the same texts, one sequence at a time
    small = sample.rejection_sample(model, tokenizer, QUESTIONS, max_thinking_tokens=5, max_tries=3,
                                    temperature=0.0, max_tokens=MAX_TOKENS, progress=False,
                                    kv_memory_gb=1.2 * one_row_gb(model, MAX_TOKENS))
    assert [o["text"] for o in small] == [o["text"] for o in outs]


@pytest.mark.parametrize("tied", [True, False])
def test_plans_count_the_parameters_the_model_has(tied):
    """plan.py's count against the model's own parameters (on the meta device), tied and untied."""
    import dataclasses
    import model as M
    cfg = dataclasses.replace(hf_checkpoint.known_shape("Qwen2.5-1.5B"), tie_word_embeddings=tied)
    with torch.device("meta"):
        assert plan.num_params(cfg) == M.num_params(M.Qwen2(cfg))


def test_memory_plan_for_32b_matches_a_hand_computation():
    cfg = hf_checkpoint.known_shape("simplescaling/s1-32B")
    # one block: q and o (5120 x 5120), k and v (5120 x 1024), their biases, the MLP
    # (3 x 5120 x 27648), two norms
    block = 2 * 5120 * 5120 + 2 * 5120 * 1024 + 5120 + 2 * 1024 + 3 * 5120 * 27648 + 2 * 5120
    assert block == 487_605_248
    whole = 2 * 152064 * 5120 + 5120  # embedding, LM head (untied), final norm: on every rank
    p = plan.generation_plan(cfg, 8, 32768, 64, 79.1)
    assert p["weights"] == (64 * block / 8 + whole) * 2  # 10.2 GiB of bf16 per GPU
    assert p["kv per token"] == 2 * 64 * 1 * 128 * 2  # 8 KV heads over 8 GPUs: one each
    one_gpu = plan.generation_plan(cfg, 1, 32768, 64, 79.1)
    assert one_gpu["kv per token"] == 262_144  # 256 KiB: 64 layers x 8 KV heads x 128 x 2 x 2 bytes
    assert one_gpu["rows that fit"] == 0  # 61 GiB of weights leave no 32K row
    assert p["rows that fit"] == int(p["KV pool"] // (32768 * 32768))
    out = run([sys.executable, "sample.py", "--dry-run", "--model", "simplescaling/s1-32B",
               "--gpus", "8"], cwd=ROOT).stdout
    assert "| 8 | 10.2 GiB |" in out
    assert "8 GPUs: TP 2 x DP 4 (the smallest TP whose plan fits)" in out
