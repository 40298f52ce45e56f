"""sample.py: the decoder against a naive full-recompute loop, and budget forcing on a hand-built
model whose behaviour is known token by token."""
import json
import os
import sys

import pytest
import torch
from conftest import run, tiny_hf_model

import sample
from dataclasses import asdict
from machinery import chat, engine, hf_checkpoint

PY = sys.executable
TORCHRUN = os.path.join(os.path.dirname(PY), "torchrun")
QUESTIONS = ["What is 2+3?", "Name a prime larger than ten, please.", "Why?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Qwen2 with the byte-level tokenizer: (model, tokenizer, directory)."""
    path = tmp_path_factory.mktemp("tiny")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(path)
    tokenizer = chat.build_byte_tokenizer(str(path))
    return hf_checkpoint.from_pretrained(str(path), dtype=torch.float32), tokenizer, str(path)


def generate_with_ids(*args, **kw):
    """sample.generate, plus each row's generated token ids (byte-level text does not
    round-trip)."""
    rows = {}
    outs = sample.generate(*args, on_token=lambda row: rows.__setitem__(row.index, row), **kw)
    return outs, [rows[b].tokens for b in range(len(outs))]


def test_greedy_equals_naive_full_recompute(tiny):
    model, tokenizer, _ = tiny
    out, generated = generate_with_ids(model, tokenizer, QUESTIONS, max_tokens=200, batch_size=3,
                                       progress=False)
    for o, tokens in zip(out, generated):
        ids = tokenizer.encode(o["prompt"], add_special_tokens=False)
        assert len(tokens) >= 24
        expected = []
        # the naive reference: the whole sequence through the model for every token
        with torch.no_grad():
            for _ in range(24):
                logits = model(torch.tensor([ids + expected]))[0, -1, :len(tokenizer)]
                expected.append(int(logits.argmax()))
        assert tokens[:24] == expected


def test_rows_of_different_lengths_batch_like_one_at_a_time(tiny):
    model, tokenizer, _ = tiny
    kw = dict(max_tokens=150, max_thinking_tokens=20, progress=False)
    batched = sample.generate(model, tokenizer, QUESTIONS, batch_size=3, **kw)
    alone = [sample.generate(model, tokenizer, [q], batch_size=1, **kw)[0] for q in QUESTIONS]
    assert [o["text"] for o in batched] == [o["text"] for o in alone]


def test_cap_gives_exactly_n_thinking_tokens_then_the_answer_header(tiny):
    model, tokenizer, _ = tiny
    for cap in (1, 7, 25):
        outs, generated = generate_with_ids(model, tokenizer, QUESTIONS, max_thinking_tokens=cap,
                                            max_tokens=200, progress=False)
        for o, tokens in zip(outs, generated):
            assert o["thinking_tokens"] == cap and o["ended"] == "capped"
            newline = "" if o["thinking"].endswith("\n") else "\n"
            forced = newline + "<|im_start|>answer\nFinal Answer:"
            header = tokenizer.encode(forced, add_special_tokens=False)
            assert tokens[cap:cap + len(header)] == header
            assert o["text"].startswith(o["thinking"] + forced)


def test_natural_end_and_wait_insertions_on_a_known_model(bigram):
    model, tokenizer = bigram
    o = sample.generate(model, tokenizer, ["q"], max_tokens=300, progress=False)[0]
    assert (o["thinking"], o["ended"], o["forced"]) == ("abc", "natural", [])
    assert o["text"] == "abc<|im_start|>answer\n7<|im_end|>"
    assert o["answer"] == "\n7" and o["finished"]
    for k in (1, 2, 4):
        o = sample.generate(model, tokenizer, ["q"], num_ignore=k, max_tokens=300,
                            progress=False)[0]
        assert [e["what"] for e in o["forced"]] == ["Wait"] * k
        assert o["thinking"] == "abc" + "Waitabc" * k and o["thinking_tokens"] == 3 + 7 * k
        assert o["ended"] == "natural" and o["text"].endswith("<|im_start|>answer\n7<|im_end|>")
    # The budget shrinks across rounds: with 4 ignores but a cap of 12, the second round is cut.
    o = sample.generate(model, tokenizer, ["q"], num_ignore=4, max_thinking_tokens=12,
                        max_tokens=300, progress=False)[0]
    assert o["thinking"] == "abcWaitabcWa" and o["ended"] == "capped"
    assert o["text"].endswith("\n<|im_start|>answer\nFinal Answer: 7<|im_end|>")
    assert o["answer"] == " 7"


def test_tokens_fed_are_prompt_plus_generated_no_reprefill(bigram):
    model, tokenizer = bigram
    fed = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda m, inp, out: fed.append(inp[0].numel()))
    stats = {}
    outs = sample.generate(model, tokenizer, ["q", "a longer question"], num_ignore=4,
                           max_tokens=300, stats=stats, batch_size=2, progress=False)
    handle.remove()
    prompts = [len(tokenizer.encode(o["prompt"], add_special_tokens=False)) for o in outs]
    # every token after the prompt is fed once, except the closing <|im_end|>, which needs no
    # successor
    assert stats["fed"] == sum(prompts) + sum(o["generated_tokens"] - o["finished"] for o in outs)
    steps = len(fed) - 1  # one prefill, then one token per row per step
    assert steps == max(o["generated_tokens"] - o["finished"] for o in outs)


def test_a_prompt_longer_than_the_context_is_a_clear_error(bigram):
    model, tokenizer = bigram
    with pytest.raises(ValueError,
                       match="question 1: the prompt has .* tokens, the context .* 120"):
        sample.generate(model, tokenizer, ["q", "x" * 200], max_tokens=120, progress=False)


def test_auto_budget_and_context_limit(bigram):
    model, tokenizer = bigram
    o = sample.generate(model, tokenizer, ["q"], max_thinking_tokens="auto", num_ignore=100,
                        max_tokens=300, progress=False)[0]
    prompt = len(tokenizer.encode(o["prompt"], add_special_tokens=False))
    # s1 vllm_causallms.py l. 264: max_tokens - prompt - len(tok("<|im_start|>think"))
    #     - len(tok("<|im_start|>answer\nFinal Answer:")) - 100; our prompt holds the first
    header = len(tokenizer.encode("<|im_start|>answer\nFinal Answer:"))
    assert o["thinking_tokens"] == 300 - prompt - header - 100
    assert o["ended"] == "capped" and o["finished"]


def test_sampling_is_seeded_and_respects_top_p(tiny):
    model, tokenizer, _ = tiny
    kw = dict(max_tokens=200, temperature=1.0, progress=False, max_thinking_tokens=16)
    a = sample.generate(model, tokenizer, QUESTIONS, seed=1, **kw)
    b = sample.generate(model, tokenizer, QUESTIONS, seed=1, **kw)
    c = sample.generate(model, tokenizer, QUESTIONS, seed=2, **kw)
    assert [o["text"] for o in a] == [o["text"] for o in b] != [o["text"] for o in c]
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]])
    picks = {int(engine.sample_tokens(logits, 1.0, 0.5, 4, seeds=i)) for i in range(50)}
    assert picks == {1}  # token 1 alone holds over half the mass
    # ids past the vocabulary never
    assert int(engine.sample_tokens(torch.tensor([[0.0, 1.0, 9.0]]), 0.0, 1.0, 2)) == 1


def test_a_draw_follows_the_softmax_and_depends_on_its_seed_alone():
    """The Gumbel-max draw with noise hashed from (seed, token id), one batched draw per step: over
    20,000 seeds each token comes up as often as softmax(logits / T) says (within 4 standard
    errors); a row draws the same token alone as in a batch of other rows; greedy rows take the
    argmax whatever their seed."""
    logits, T, n = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5]), 0.7, 20000
    draws = engine.sample_tokens(logits.expand(n, -1), T, 1.0, 5, seeds=list(range(n)))
    freq, p = torch.bincount(draws, minlength=5) / n, torch.softmax(logits / T, -1)
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt()).all(), (freq, p)
    batch = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    seeds, temperatures = [3, 2 ** 62 + 1, 17, 0, 99, 5], [1.0, 0.0, 0.8, 1.2, 1.0, 0.0]
    together = engine.sample_tokens(batch, temperatures, 0.9, 50, seeds).tolist()
    assert together == [int(engine.sample_tokens(batch[i:i + 1], temperatures[i], 0.9, 50,
                                                 seeds[i])) for i in range(6)]
    assert together[1] == batch[1].argmax() and together[5] == batch[5].argmax()
    spread = engine.sample_tokens(torch.zeros(200, 50), 1.0, 1.0, 50, list(range(200)))
    assert len(set(spread.tolist())) > 40

    def hash32(x):  # the uint32 hash in Python integers, which never overflow
        for _ in range(2):
            x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
        return (x >> 16) ^ x
    xs = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 32 - 1]
    assert engine.hash32(torch.tensor(xs)).tolist() == [hash32(x) for x in xs]


def test_parallel_sampling_and_rejection_sampling(bigram):
    model, tokenizer = bigram
    outs = sample.generate(model, tokenizer, ["q", "r"], n=3, max_tokens=200, progress=False)
    assert len(outs) == 6 and all(o["thinking"] == "abc" for o in outs)
    ok = sample.rejection_sample(model, tokenizer, ["q"], max_thinking_tokens=5, max_tries=3,
                                 max_tokens=200, progress=False, temperature=0.0)[0]
    assert ok["accepted"] and ok["tries"] == 1
    rejected = sample.rejection_sample(model, tokenizer, ["q"], max_thinking_tokens=2, max_tries=3,
                                       max_tokens=200, progress=False, temperature=0.0)[0]
    assert not rejected["accepted"] and rejected["tries"] == 3
    # s1 vllm_causallms.py l. 299 accepts len(token_ids) <= B, the delimiter it stopped on included:
    # "abc" + <|im_start|> is 4 tokens, so a budget of 4 accepts it and 3 does not.
    for budget, accepted in ((4, True), (3, False)):
        o = sample.rejection_sample(model, tokenizer, ["q"], max_thinking_tokens=budget,
                                    max_tries=2, max_tokens=200, progress=False,
                                    temperature=0.0)[0]
        assert o["accepted"] == accepted


def bigram_with(tokenizer, chain, also=()):
    """The conftest bigram model, plus weaker second choices: also = [(token, next, weight < 1)]."""
    from conftest import bigram_model
    model = bigram_model(tokenizer, chain)
    tid = lambda s: tokenizer.encode(s, add_special_tokens=False)[0]
    with torch.no_grad():
        for a, b, w in also:
            model.lm_head.weight[tid(b), tid(a)] = w
    return model


def test_cap_adds_a_newline_only_where_the_thinking_lacks_one(bigram):
    """s1 vllm_causallms.py l. 404-409: `if text[-1] == "\n"` append "<|im_start|>answer\nFinal
    Answer:", else "\n" + it. The model thinks "a\nb" here; a cap of 2 stops after "a\n", a cap of
    1 after "a"."""
    _, tokenizer = bigram
    model = bigram_with(tokenizer, {"k": "a", "a": "\n", "\n": "b", "b": "<|im_start|>", ":": " ",
                                    " ": "7", "7": "<|im_end|>"})
    two, one = (sample.generate(model, tokenizer, ["q"], max_thinking_tokens=cap, max_tokens=200,
                                progress=False)[0] for cap in (2, 1))
    assert two["text"] == "a\n<|im_start|>answer\nFinal Answer: 7<|im_end|>"
    # the newline the model lacked
    assert one["text"] == "a\n<|im_start|>answer\nFinal Answer: 7<|im_end|>"
    assert (two["thinking"], one["thinking"]) == ("a\n", "a")
    assert [e["what"] for e in one["forced"]] == ["\n<|im_start|>answer\nFinal Answer:"]


def test_wait_mode_cannot_end_a_thinking_round_on_its_first_token(bigram):
    """s1 vllm_causallms.py l. 273-280: with thinking_n_ignore every round runs with min_tokens=1,
    so the delimiter cannot be the first token of a round (after "<|im_start|>think", after each
    "Wait"). This model would end its thinking at once; its second choice is "a"."""
    _, tokenizer = bigram
    model = bigram_with(tokenizer, {"k": "<|im_start|>", "a": "<|im_start|>", "t": "<|im_start|>",
                                    "r": "\n", "\n": "7", "7": "<|im_end|>"},
                        also=[("k", "a", 0.5), ("t", "a", 0.5)])
    plain = sample.generate(model, tokenizer, ["q"], max_tokens=200, progress=False)[0]
    assert plain["thinking"] == "" and plain["ended"] == "natural"  # no Wait: no min_tokens
    o = sample.generate(model, tokenizer, ["q"], num_ignore=2, max_tokens=200, progress=False)[0]
    assert o["thinking"] == "aWaitaWaita" and o["ended"] == "natural"


def test_endoftext_ends_the_thinking_and_the_answer_and_stays_in_the_context(bigram):
    """vLLM stops on the generation config's EOS ids (Qwen2.5: <|im_end|> and <|endoftext|>) and
    returns the stop id among the tokens; the harness strips only <|im_start|> and <|im_end|>
    (l. 362, 397)."""
    _, tokenizer = bigram
    model = bigram_with(tokenizer, {"k": "a", "a": "<|endoftext|>", "t": "a", "r": "\n", "\n": "7",
                                    "7": "<|endoftext|>"})
    o = sample.generate(model, tokenizer, ["q"], max_tokens=200, progress=False)[0]
    assert o["text"] == "a<|endoftext|><|im_start|>answer\n7<|endoftext|>"
    assert o["finished"] and o["answer"] == "\n7" and o["ended"] == "natural"
    o = sample.generate(model, tokenizer, ["q"], num_ignore=1, max_tokens=200, progress=False)[0]
    assert o["text"] == "a<|endoftext|>Waita<|endoftext|><|im_start|>answer\n7<|endoftext|>"


def test_an_empty_ignore_string_suppresses_the_delimiter_and_appends_nothing(bigram, tmp_path):
    """s1's "no string" ablation (eval/commands.sh: thinking_n_ignore=2 without
    thinking_n_ignore_str): the delimiter is dropped and the round goes on from the same context;
    the model's second choice after "c" is "d", after "d" the delimiter again."""
    _, tokenizer = bigram
    model = bigram_with(tokenizer, {"k": "a", "a": "b", "b": "c", "c": "<|im_start|>",
                                    "d": "<|im_start|>", "r": "\n", "\n": "7", "7": "<|im_end|>"},
                        also=[("c", "d", 0.5), ("d", "c", 0.5)])
    o = sample.generate(model, tokenizer, ["q"], num_ignore=2, ignore_str="", max_tokens=200,
                        progress=False)[0]
    assert o["thinking"] == "abcdc" and [e["what"] for e in o["forced"]] == ["", ""]
    assert o["text"] == "abcdc<|im_start|>answer\n7<|im_end|>"
    for word in ("Hmm", "Alternatively"):  # the paper's other extrapolation strings
        o = sample.generate(model, tokenizer, ["q"], num_ignore=1, ignore_str=word, max_tokens=200,
                            progress=False)[0]
        assert o["thinking"].startswith("abc" + word)


def test_conditional_control_prompts():
    assert sample.control_prompt("Q", "tokens", 2048) == "Q\n\nThink for up to 2048 tokens."
    assert sample.control_prompt("Q", "steps", 64) == "Q\n\nThink for up to 64 steps."
    short = sample.control_prompt("Q", "short")
    assert short.startswith("Q\n\nAnswer after a short amount of thinking.")


def test_file_mode_resumes_and_data_x_tensor_parallel_match_one_process(tiny, tmp_path):
    """One process resumes an output; under torchrun, 2 processes as TP 2 x DP 1 and 4 as TP 2 x
    DP 2 give its texts. The 4 resume a stopped run: rows in the output, and a replica's part file
    with a torn last line; rank 0 writes every other row once, in input order, and no part is
    left."""
    _, _, path = tiny
    questions = tmp_path / "q.jsonl"
    texts = QUESTIONS + ["Count to five.", "Hello there"]
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": q}) + "\n"
                                 for i, q in enumerate(texts)))
    args = ["sample.py", "--model", path, "--input", str(questions), "--max-thinking-tokens", "12",
            "--num-ignore", "1", "--max-tokens", "160", "--batch-size", "2"]
    one = tmp_path / "one.jsonl"
    torn = '{"id": "q2", "quest'
    one.write_text(json.dumps({"id": "q1", "question": "already done"}) + "\n" + torn)
    run([PY, *args, "--output", str(one)])
    records = [json.loads(line) for line in one.read_text().splitlines()]
    assert records[0] == {"id": "q1", "question": "already done"}
    done = {r["id"]: r for r in records[1:]}
    text = {i: r["text"] for i, r in done.items()}
    assert sorted(text) == ["q0", "q2", "q3", "q4"] and len(set(text.values())) == 4
    two = tmp_path / "two.jsonl"
    run([TORCHRUN, "--standalone", "--nproc-per-node", "2", *args, "--tp", "2", "--output",
         str(two)])
    by_id = {r["id"]: r["text"] for r in map(json.loads, two.read_text().splitlines())}
    assert by_id == dict(by_id, **text) and len(by_id) == 5  # q1: one process had it done
    # a stopped 4-process run: q0 in the output, q3 in replica 1's part before a torn line
    four = tmp_path / "four.jsonl"
    four.write_text(json.dumps(done["q0"]) + "\n")
    (tmp_path / "four.jsonl.part1").write_text(json.dumps(done["q3"]) + "\n" + torn)
    run([TORCHRUN, "--standalone", "--nproc-per-node", "4", *args, "--tp", "2", "--output",
         str(four)])
    rows = [json.loads(line) for line in four.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q3", "q1", "q2", "q4"]  # the rest in input order
    assert {r["id"]: r["text"] for r in rows} == by_id
    assert sorted(os.listdir(tmp_path)) == sorted(["q.jsonl", "one.jsonl", "one.config.json",
                                                   "two.jsonl", "two.config.json", "four.jsonl",
                                                   "four.config.json"])


def test_command_line_prompt_and_rejection_sampling(tiny):
    _, _, path = tiny
    args = [PY, "sample.py", "--model", path, "--prompt", "What is 2+3?", "--max-tokens", "200"]
    out = run(args + ["--max-thinking-tokens", "8"]).stdout
    assert "--- thinking (8 tokens, ended capped" in out and "--- answer (" in out
    out = run(args + ["--max-thinking-tokens", "8", "--rejection-sampling", "--max-tries", "2",
                      "--temperature", "1"]).stdout
    assert "--- thinking (" in out and "--- answer (" in out
    bad = run(args + ["--rejection-sampling"], check=False)
    assert bad.returncode == 2
    assert "rejection sampling with an integer max_thinking_tokens" in bad.stderr


def test_a_row_that_reaches_the_context_ends_exactly_there(bigram):
    """Prompt + generated == max_tokens, never one more: the bigram model thinks "abc", and with
    endless "Wait"s and no cap it runs until the context is full."""
    model, tokenizer = bigram
    for max_tokens in (140, 141, 157):
        o = sample.generate(model, tokenizer, ["q"], num_ignore=1000, max_tokens=max_tokens,
                            progress=False)[0]
        prompt = len(tokenizer.encode(o["prompt"], add_special_tokens=False))
        assert prompt + o["generated_tokens"] == max_tokens
        assert o["ended"] == "length" and not o["finished"]


def test_tensor_parallel_ranks_read_only_their_slice(tiny, monkeypatch):
    """Each rank of 2 asks safetensors for half of every block weight (its rows of q/k/v/gate/up,
    its columns of o/down) and for the embedding, norms and LM head whole; and what it keeps is
    exactly torch.chunk's piece of the whole tensor, as if it had read it all and cut it."""
    import safetensors
    whole, _, path = tiny
    full = dict(whole.named_parameters())
    real_open, asked = safetensors.safe_open, {}

    class Part:  # get_slice's answer, recording the elements an index asks for
        def __init__(self, part, name):
            self.part, self.name = part, name

        def get_shape(self):
            return self.part.get_shape()

        def __getitem__(self, index):
            t = self.part[index]
            asked[self.name] = asked.get(self.name, 0) + t.numel()
            return t

    class Open:  # safe_open, recording every tensor the loader asks for
        def __init__(self, *args, **kw):
            self.f = real_open(*args, **kw)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_slice(self, name):
            return Part(self.f.get_slice(name), name)

        def get_tensor(self, name):
            t = self.f.get_tensor(name)
            asked[name] = asked.get(name, 0) + t.numel()
            return t
    monkeypatch.setattr(safetensors, "safe_open", Open)

    for rank in range(2):
        asked.clear()
        part = sample.load_model(path, torch.device("cpu"), torch.float32, tp=2, tp_rank=rank)
        ours = dict(part.named_parameters())
        assert sorted(asked) == sorted(full)
        for name, p in full.items():
            block = ".layers." in name and "norm" not in name
            assert asked[name] * (2 if block else 1) == p.numel(), name
            dim = 1 if "o_proj" in name or "down_proj" in name else 0
            expected = p.chunk(2, dim=dim)[rank] if block else p
            assert ours[name].is_contiguous() and torch.equal(ours[name], expected), name
        block_total = sum(p.numel() for n, p in full.items() if ".layers." in n and "norm" not in n)
        assert sum(asked[n] for n in full if ".layers." in n and "norm" not in n) * 2 == block_total


def test_budget_forcing_ids_on_the_real_tokenizer_as_s1_saved_it():
    """s1's train/sft.py l. 56 sets pad_token = "<|fim_pad|>" and saves that tokenizer with the
    model, so <|endoftext|> is no longer a special token there; vLLM still stops on it (the
    generation config's eos_token_id). And the cap's newline rule needs every token whose text ends
    in a newline."""
    from conftest import TOKENIZER_DIR
    tokenizer = chat.load_tokenizer(TOKENIZER_DIR)
    tokenizer.pad_token = "<|fim_pad|>"
    ids = sample.special_ids(tokenizer, "Wait")
    assert ids["eos"] == [151643] and ids["stops"] == {151643, 151644, 151645}
    enc = lambda t: tokenizer.encode(t, add_special_tokens=False)
    assert all(len(enc(t)) == 1 and enc(t)[0] in ids["ends_in_newline"]
               for t in (".\n\n", ");\n", "\n"))
    assert enc(" the")[0] not in ids["ends_in_newline"]
    assert enc("\n ")[-1] not in ids["ends_in_newline"]
    assert len(ids["ends_in_newline"]) == 2178


def test_a_plain_completion_counts_the_thinking_it_writes_itself(bigram):
    """s1's "nottc" run: no think prefix, yet an s1 model writes "<|im_start|>think ...
    <|im_start|>answer" itself, and s1's eval/compute_sample_stats.py counts what lies between as
    thinking."""
    _, tokenizer = bigram
    ids = sample.special_ids(tokenizer, "Wait")
    enc = lambda t: tokenizer.encode(t, add_special_tokens=False)
    text = "<|im_start|>think\nabc\n<|im_start|>answer\nAnswer: 7<|im_end|>"
    row = sample.Row(prompt_len=5, max_len=100, special=ids, ignores_left=0, phase="done",
                     tokens=enc(text), finished=True)
    o = sample.result(row, tokenizer, "p", plain=True)
    assert (o["thinking"], o["thinking_tokens"], o["answer"]) == (
        "\nabc\n", len(enc("\nabc\n")), "\nAnswer: 7")
    row.tokens = enc("Answer: 7<|im_end|>")  # no header: all of it is the answer
    o = sample.result(row, tokenizer, "p", plain=True)
    assert (o["thinking"], o["thinking_tokens"], o["answer"]) == ("", 0, "Answer: 7")


# ----------------------------------------------------------------------------------------------
# One home for a setting: the paper's baselines and a new variant as Settings

def test_a_setting_names_its_bad_field():
    for fields, name in (({"num_ignore": -1}, "num_ignore"), ({"max_thinking_tokens": 0},
                         "max_thinking_tokens"), ({"control": "tokens"}, "control_value"),
                         ({"tries": 3}, "tries"), ({"step_forcing": True}, "step_forcing"),
                         ({"control": "colour"}, "control"), ({"num_ignore": True}, "num_ignore"),
                         ({"min_thinking_tokens": "a"}, "min_thinking_tokens"),
                         ({"control": []}, "control"), ({"step_forcing": "no"}, "step_forcing"),
                         ({"control_value": 5}, "control_value"),
                         ({"max_thinking_tokens": 5, "tries": 3, "think": False}, "tries")):
        with pytest.raises(ValueError, match=f"invalid '{name}'"):
            sample.setting_from(fields)
    with pytest.raises(ValueError, match="unknown setting field 'colour'"):
        sample.setting_from({"colour": 1})
    assert sample.setting_fields("ignore_str=Hmm") == {"ignore_str": "Hmm"}
    assert sample.setting_fields("max_thinking_tokens=500") == {"max_thinking_tokens": 500}


def scripted_row(tokenizer, script, **setting):
    """A Row of the step format fed the model's draws from `script` (text, tokenized), whatever
    the row forces in between; returns the row and what it fed."""
    s = sample.Setting(**setting)
    row = sample.make_rows(tokenizer, "q", 10, 500, [s])[0]
    draws = iter(tokenizer.encode(script, add_special_tokens=False))
    while row.phase != "done" and row.next_token(lambda banned: next(draws)) is not None:
        pass
    return row, tokenizer.decode(row.tokens, skip_special_tokens=False)


def test_step_conditional_thinking_ends_where_s1s_does(bigram):
    """s1's step-conditional model writes "<|im_start|>N steps left" before each step (its
    compute_sample_stats.py counts " steps left\\n"); with budget forcing its thinking ends at
    "<|im_start|>0" (commands.sh l. 70-74: until_thinking=<|im_start|>0, thinking_end=
    <|im_start|>answer). The rows are fed s1's text draw by draw."""
    _, tokenizer = bigram
    steps = "2 steps left\nx = 1\n<|im_start|>1 steps left\ny = 2\n<|im_start|>0 steps left\nz"
    # forced: the headers do not end the thinking; "0" does, and "answer" is fed in its place (the
    # model then writes its answer, "\n7")
    row, text = scripted_row(tokenizer, steps[:steps.index("0 steps")] + "0\n7<|im_end|>",
                             control="steps", control_value=2, step_forcing=True)
    thinking = "2 steps left\nx = 1\n<|im_start|>1 steps left\ny = 2\n"
    assert text == thinking + "<|im_start|>answer\n7<|im_end|>" and row.ended == "steps"
    assert tokenizer.decode(row.tokens[:row.thinking_tokens]) == thinking
    # not forced: "0 steps left" is one more step; the model's own "<|im_start|>a..." ends it ("a"
    # is where the forced "answer" goes)
    row, text = scripted_row(tokenizer, steps + "<|im_start|>a\n7<|im_end|>",
                             control="steps", control_value=2)
    assert text == steps + "<|im_start|>answer\n7<|im_end|>" and row.ended == "natural"
    assert tokenizer.decode(row.tokens[:row.thinking_tokens]) == steps
    assert row.finished
    # the prompt opens the thinking with "<|im_start|>" (thinking_start=<|im_start|>), and asks
    s = sample.Setting(control="steps", control_value=2)
    assert s.prompt_text("Q").endswith("Q\n\nThink for up to 2 steps.<|im_end|>\n"
                                       "<|im_start|>assistant\n<|im_start|>")


def test_a_step_model_in_the_engine(bigram):
    """The real engine on two bigram models of the step format: one whose every header says 1 step
    left (its thinking goes on to the cap, where the plain format ends it at the first
    <|im_start|>), and one whose header says 0 (step forcing answers there)."""
    from conftest import BIGRAM_CHAIN, bigram_model
    _, tokenizer = bigram
    one = bigram_model(tokenizer, {**BIGRAM_CHAIN, "<|im_start|>": "1", "1": "x",
                                   "x": "<|im_start|>"})
    steps = sample.Setting(12, control="steps", control_value=4, step_forcing=True)
    plain = sample.Setting(12)
    o = sample.generate(one, tokenizer, ["q"], settings=[steps, plain], max_tokens=300,
                        progress=False)
    assert o[0]["thinking"] == "1x<|im_start|>" * 4  # the cap's 12th token is a header's
    assert o[0]["ended"] == "capped" and o[0]["thinking_tokens"] == 12
    # the plain format ("<|im_start|>think" -> "abc") ends at its first <|im_start|>
    assert (o[1]["thinking"], o[1]["ended"]) == ("abc", "natural")
    zero = bigram_model(tokenizer, {**BIGRAM_CHAIN, "<|im_start|>": "0", "0": "x",
                                    "x": "<|im_start|>"})
    forced, free = sample.generate(zero, tokenizer, ["q"], settings=[
        steps, sample.Setting(12, control="steps", control_value=4)], max_tokens=300,
        progress=False)
    assert forced["ended"] == "steps" and forced["text"] == "answer\n7<|im_end|>"
    assert free["ended"] == "capped" and free["thinking"].startswith("0x<|im_start|>0x")


def test_rejection_sampling_and_a_new_variant_are_settings_of_one_call(bigram):
    """Rejection sampling beside budget forcing in one generate call; and min_thinking_tokens, the
    variant added as one Setting field: the bigram model, which ends its thinking after "abc", may
    not end it before 6 tokens."""
    model, tokenizer = bigram
    settings = [sample.Setting(4, tries=3), sample.Setting(2, tries=3), sample.Setting(8),
                sample.Setting(None, min_thinking_tokens=6)]
    ok, rejected, capped, longer = sample.generate(model, tokenizer, ["q"], settings=settings,
                                                   max_tokens=300, progress=False)
    assert (ok["accepted"], ok["tries"]) == (True, 1)
    assert (rejected["accepted"], rejected["tries"]) == (False, 3)
    assert "tries" not in capped and capped["thinking"] == "abc"
    assert longer["thinking"].startswith("abc") and longer["thinking_tokens"] >= 6
    assert sample.Setting(None).prompt_text("q") == chat.prompt_text("q") + chat.THINK


def test_an_output_made_before_a_setting_field_existed_resumes(tmp_path):
    """A --output's config as sample.py wrote it before Setting (flat flags, --rejection-sampling
    and --max-tries, no min_thinking_tokens or step_forcing) resumes with the same flags; a new
    field's value, or a flag changed since, is named. sample.py's own check, on its command line."""
    from machinery import jsonl
    old = {"model": "m", "tokenizer": None, "dtype": "float32", "max_thinking_tokens": None,
           "num_ignore": 2, "ignore_str": "Wait", "max_tokens": 32768, "temperature": 0.0,
           "top_p": 1.0, "seed": 0, "n": 1, "control": None, "control_value": None,
           "rejection_sampling": False, "max_tries": 8}
    path = tmp_path / "o.config.json"
    path.write_text(json.dumps(old))

    def check(*flags):
        args = sample.parse_args(["--model", "m", "--input", "q", "--output", "o", "--dtype",
                                  "float32", *flags])
        config = {**{k: getattr(args, k) for k in sample.CONFIG_KEYS}, **asdict(args.setting)}
        jsonl.same_config(str(path), config, "hint", defaults=sample.SETTING_DEFAULTS,
                          upgrade=sample.stored_setting)
    check("--num-ignore", "2")
    with pytest.raises(SystemExit, match="min_thinking_tokens 0 \\(now 9\\)"):
        check("--num-ignore", "2", "--setting", "min_thinking_tokens=9")
    with pytest.raises(SystemExit, match="num_ignore 2 \\(now 0\\)"):
        check()
    old.update(rejection_sampling=True, max_thinking_tokens=5, temperature=1.0)
    path.write_text(json.dumps(old))
    check("--num-ignore", "2", "--max-thinking-tokens", "5", "--rejection-sampling",
          "--max-tries", "8", "--temperature", "1")
