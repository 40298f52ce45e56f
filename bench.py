"""Benchmarks: ours against the transformers reference, in one process, on the same weights and inputs.

    python bench.py forward          # model.py forward vs transformers Qwen2ForCausalLM
    python bench.py train            # one training step (forward, loss, backward, AdamW) of each
    python bench.py grade            # eval.py's grader vs plain math-verify on MATH500's 500 solutions
    python bench.py decode           # sample.py's decoder vs transformers generate, and the tokens
                                     # budget forcing feeds vs re-submitting the prompt every round
    python bench.py batching         # continuous batching vs static batches vs transformers generate
                                     # on prompts whose generation lengths span 20x
    python bench.py serve            # 8 concurrent clients of serve.py vs the same 8 requests in turn
    python bench.py sweep            # the demo's evaluation sweep, forked from shared thinking vs
                                     # every setting alone (needs make demo's runs/demo)
    python bench.py plan             # not a timing: train.py's memory planner against the peak memory
                                     # of real steps (CPU, fp32, 0.5B shape minus a tiny one; --tokens)
    python bench.py export           # not a timing: what a bf16 export would round away of a
                                     # training run with s1's schedule (why train.py saves fp32)
    python bench.py gpu              # make gpu-check: the first command on a GPU machine (kernels'
                                     # numerics, train MFU and memory, decode roofline, 2 GPUs);
                                     # --device cpu runs it on tiny shapes. Not part of "all".

Machines are noisy: every figure is the median of --repeats timed runs after one warm-up, and runs
of ours and the reference alternate so that drift hits both. The ratio ours/reference is what to
quote (< 1.0 means ours is faster).
"""
import argparse
import contextlib
import copy
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import cli
import hf_checkpoint as hf
import model as M
import sample

# Qwen2.5-0.5B's shape (its config.json), with random weights: nothing is downloaded.
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
                  tie_word_embeddings=True, max_position_embeddings=32768)


def build_pair(dtype, copy=False):
    """transformers' Qwen2ForCausalLM with random weights, and ours with the same values: the very
    same tensors, or (copy=True, for training, where each model updates its own) a copy."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    ref = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype).eval()
    with torch.device("meta"):
        ours = M.Qwen2(M.Config(**QWEN25_05B, torch_dtype=str(dtype).removeprefix("torch.")))
    ours.load_state_dict({k: v.clone() if copy else v for k, v in ref.state_dict().items()}, assign=True)
    ours.lm_head.weight = ours.model.embed_tokens.weight
    return ours.eval(), ref


def seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(name, ours_fn, ref_fn, repeats):
    """Median time of each after one warm-up; single runs alternate so that drift hits both alike."""
    ours_fn(), ref_fn()
    ours_t, ref_t = [], []
    for _ in range(repeats):
        ours_t.append(seconds(ours_fn))
        ref_t.append(seconds(ref_fn))
    o, r = statistics.median(ours_t), statistics.median(ref_t)
    print(f"| {name} | {o:.3f} s | {r:.3f} s | {o / r:.2f}x |", flush=True)
    return o, r


@torch.no_grad()
def bench_forward(args):
    print(f"\nForward of a random Qwen2.5-0.5B-shaped model, {args.tokens} tokens, batch 1, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | ours | transformers | ours / transformers |\n|---|---|---|---|")
    ids = torch.randint(0, 151643, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        ours, ref = build_pair(dtype)
        tag = str(dtype).removeprefix("torch.")
        compare(f"{tag}, all logits", lambda: ours(ids), lambda: ref(ids, use_cache=False), args.repeats)

        def ours_prefill():  # a paged KV-cache prefill, as sample.py's engine runs it: only the last logits
            pool = sample.BlockPool(ours.cfg, -(-args.tokens // 16), 16, ours.cfg.num_key_value_heads, "cpu", dtype)
            seq = sample.Seq(ids[0].tolist(), rows=[], blocks=[pool.allocate() for _ in range(len(pool.refs))])
            ours(ids, cache=sample.PagedBatch(pool, [seq], "cpu"))
        compare(f"{tag}, prefill (KV cache, last logits)", ours_prefill,
                lambda: ref(ids, use_cache=True, logits_to_keep=1), args.repeats)
        del ours, ref


def bench_train(args):
    """One step of train.py's inner loop (loss over the completion, backward, clip, AdamW) with our
    model and with transformers' in its place; bf16 weights, as a CPU cannot hold fp32 master
    weights plus fp32 optimizer state for this size within a short benchmark."""
    print(f"\nTraining step of a random Qwen2.5-0.5B-shaped model, {args.tokens} tokens, bf16, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | ours | transformers | ours / transformers |\n|---|---|---|---|")
    ours, ref = build_pair(torch.bfloat16, copy=True)
    ours.train(), ref.train()
    ids = torch.randint(0, 151643, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, : args.tokens // 4] = M.IGNORE  # the prompt carries no loss
    labels[:, -1] = M.IGNORE

    def step(model, loss_fn):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)

        def run():
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    n = (labels != M.IGNORE).sum()
    ours_step = step(ours, lambda: ours(ids, labels=labels).sum() / n)
    # transformers shifts labels itself: give it the unshifted targets
    hf_labels = torch.cat([torch.full((1, 1), M.IGNORE), labels[:, :-1]], dim=1)
    ref_step = step(ref, lambda: ref(ids, labels=hf_labels, use_cache=False).loss)
    compare("bf16, forward + backward + AdamW", ours_step, ref_step, args.repeats)


@torch.no_grad()
def bench_decode(args):
    print(f"\nGreedy decoding of {args.new_tokens} new tokens after a 16-token prompt, random Qwen2.5-0.5B-shaped "
          f"model, bf16, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | ours | transformers generate | ours / transformers |\n|---|---|---|---|")
    ours, ref = build_pair(torch.bfloat16)

    for batch in (1, 8):
        prompts = torch.randint(0, 151643, (batch, 16), generator=torch.Generator().manual_seed(batch))

        def ours_run():
            engine = sample.Engine(ours, 16 + args.new_tokens, max_rows=batch)
            rows = [sample.Row(prompt_len=16, max_len=16 + args.new_tokens, ids=NO_STOP, cap=None, ignores_left=0,
                               phase="answer") for _ in range(batch)]
            for prompt, row in zip(prompts.tolist(), rows):
                engine.add(prompt, [row])
            while engine.busy():
                engine.step()
            assert all(len(r.tokens) == args.new_tokens for r in rows)

        def ref_run():
            out = ref.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)
            assert out.shape[1] == 16 + args.new_tokens

        o, r = compare(f"batch {batch} ({batch * args.new_tokens} tokens)", ours_run, ref_run, args.repeats)
        print(f"|   tokens/s | {batch * args.new_tokens / o:.1f} | {batch * args.new_tokens / r:.1f} | {r / o:.2f}x faster |")

    # Tokens run through the model for one question with K "Wait" extensions. Ours feeds each token
    # once. s1's harness re-submits the prompt and everything so far at every round (and once more
    # for the answer), so it pays the prefix again per round. Segment lengths: the s1-32B AIME24
    # averages of docs/s1.md §7.2 (5,300 thinking tokens without forcing, about +700 per "Wait").
    print("\nTokens fed through the model for one AIME-like question (prompt 150, first thinking 5300, "
          "+700 per Wait, answer 200)")
    print("| K Waits | ours | re-submit each round | ratio |\n|---|---|---|---|")
    prompt, first, per_wait, wait, header, answer = 150, 5300, 700, 1, 2, 200
    for k in (1, 2, 4):
        segments = [first] + [per_wait] * k
        ours_fed = prompt + sum(segments) + k * wait + header + answer
        prefix, resubmit = prompt, 0
        for seg in segments:  # each round prefills the whole prefix again, then generates its segment
            resubmit += prefix + seg
            prefix += seg + wait
        resubmit += prefix - wait + header + answer  # the answer round re-submits everything once more
        print(f"| {k} | {ours_fed:,} | {resubmit:,} | {resubmit / ours_fed:.2f}x |")


def bench_grade(args):
    """Our grader (benchmarks.py: s1's answer extraction, integer compare, math-verify with the answer
    re-boxed) against plain math-verify on the whole text, both on MATH500's 500 reference solutions."""
    import benchmarks
    from math_verify import parse, verify
    questions = benchmarks.load_benchmark("math500")
    with open(benchmarks.BENCHMARKS["math500"][3]) as f:
        solutions = [json.loads(line)["solution"] for line in f]
    counts = {}

    def ours():
        benchmarks.GOLD_CACHE.clear()  # a cold grade of each answer: no parses kept from the previous run
        counts["ours"] = sum(benchmarks.grade("math500", q, s)["correct"] for q, s in zip(questions, solutions))

    def plain():  # the gold in $...$: bare, math-verify finds only 392 of the 500 golds' expressions
        counts["plain"] = sum(verify(parse(f"${q['gold']}$"), parse(s)) for q, s in zip(questions, solutions))

    print(f"\nGrading MATH500's 500 reference solutions against the official answers, "
          f"{os.cpu_count()} CPUs, one process, median of {args.repeats}")
    print(f"first pass of ours, math-verify's parser cold: {seconds(ours):.3f} s")
    print("| case | ours | plain math-verify | ours / plain |\n|---|---|---|---|")
    compare("500 solutions", ours, plain, args.repeats)
    print(f"correct: ours {counts['ours']}/500, plain math-verify {counts['plain']}/500")


# A Qwen2-shaped model of 31M parameters (8 layers, hidden 512, GQA 8/2, an 8K vocabulary): big
# enough that a CPU step is matmuls, not Python overhead; small enough for a 2-core machine.
MIXED = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False)


def mixed_pair():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    ref = Qwen2ForCausalLM(Qwen2Config(**MIXED)).float().eval()
    ours = M.Qwen2(M.Config(**MIXED, torch_dtype="float32"))
    ours.load_state_dict(ref.state_dict())
    return ours.eval(), ref


def mixed_workload(n, prompt_len=32, shortest=16, longest=320, seed=0):
    """n random prompts and a generation length for each, log-uniform in [shortest, longest]: as
    thinking lengths vary, most rows are short and a few are long."""
    import random
    rng = random.Random(seed)
    prompts = [[rng.randrange(8192) for _ in range(prompt_len)] for _ in range(n)]
    lengths = [round(shortest * (longest / shortest) ** rng.random()) for _ in range(n)]
    return prompts, lengths


NO_STOP = dict(im_start=-1, im_end=-1, eos=[])  # rows never end early: exactly their length, like min_new_tokens


def engine_run(model, prompts, lengths, slots, static):
    """Generate lengths[i] tokens after prompts[i], `slots` sequences at a time: continuously
    (a finished row's slot goes to the next prompt at once) or in static batches (the next batch
    starts when the slowest row of this one ends)."""
    chunks = [range(i, min(i + slots, len(prompts))) for i in range(0, len(prompts), slots)] if static else [range(len(prompts))]
    steps = 0
    for chunk in chunks:
        engine = sample.Engine(model, len(prompts[0]) + max(lengths), max_rows=slots)
        rows = [sample.Row(prompt_len=len(prompts[i]), max_len=len(prompts[i]) + lengths[i], ids=NO_STOP, cap=None,
                           ignores_left=0, phase="answer") for i in chunk]
        for i, row in zip(chunk, rows):
            engine.add(prompts[i], [row])
        while engine.busy():
            engine.step()
        steps += engine.steps
        assert [len(r.tokens) for r in rows] == [lengths[i] for i in chunk]
    return steps


@torch.no_grad()
def bench_batching(args):
    ours, ref = mixed_pair()
    prompts, lengths = mixed_workload(args.prompts)
    slots, total = args.slots, sum(lengths)
    print(f"\n{len(prompts)} prompts of 32 tokens, generation lengths {min(lengths)}-{max(lengths)} "
          f"(log-uniform, {total:,} tokens), {slots} slots, greedy, a random 31M-parameter Qwen2-shaped model, "
          f"fp32, {torch.get_num_threads()} CPU threads, median of {args.repeats}")

    def hf_run():  # static batches; generate runs each batch until its longest row is done
        for i in range(0, len(prompts), slots):
            batch = torch.tensor(prompts[i:i + slots])
            new = max(lengths[i:i + slots])
            ref.generate(batch, attention_mask=torch.ones_like(batch), do_sample=False, max_new_tokens=new,
                         min_new_tokens=new, pad_token_id=0)
    print("| case | continuous batching | other | continuous / other |\n|---|---|---|---|")
    c, s_ = compare("vs our engine in static batches", lambda: engine_run(ours, prompts, lengths, slots, False),
                    lambda: engine_run(ours, prompts, lengths, slots, True), args.repeats)
    c2, h = compare("vs transformers generate, static batches", lambda: engine_run(ours, prompts, lengths, slots, False),
                    hf_run, args.repeats)
    print(f"tokens/s: continuous {total / c:.0f}, static {total / s_:.0f} ({s_ / c:.2f}x), "
          f"transformers {total / h:.0f} ({h / c2:.2f}x)")
    static_steps = engine_run(ours, prompts, lengths, slots, True)
    hf_steps = sum(max(lengths[i:i + slots]) + 1 for i in range(0, len(prompts), slots))
    print(f"forward passes: continuous {engine_run(ours, prompts, lengths, slots, False)}, static {static_steps} "
          f"(rows that finished leave the batch), transformers {hf_steps} (every row runs to the batch's longest)")


def bench_serve(args):
    import json
    import threading
    import urllib.request
    import chat
    import serve
    import tempfile
    ours, _ = mixed_pair()
    tokenizer = chat.build_byte_tokenizer(tempfile.mkdtemp())
    server = serve.make_server(ours, tokenizer, port=0, context=512, max_rows=16)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    new = args.new_tokens

    def post(i):  # thinking that never ends ("Wait" forever) until max_tokens: exactly `new` tokens each
        body = {"messages": [{"role": "user", "content": f"Question {i}: think about it."}], "num_ignore": 10 ** 6,
                "max_tokens": new}
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            assert json.loads(r.read())["usage"]["completion_tokens"] == new

    def serial():
        for i in range(8):
            post(i)

    def concurrent():
        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(f"\nserve.py: 8 requests of {new} tokens each, the 31M model, fp32, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats}")
    print("| case | 8 concurrent clients | 8 requests in turn | concurrent / serial |\n|---|---|---|---|")
    c, s_ = compare("wall time", concurrent, serial, args.repeats)
    print(f"aggregate tokens/s: concurrent {8 * new / c:.0f}, serial {8 * new / s_:.0f} ({s_ / c:.2f}x)")
    server.shutdown()


def bench_sweep(args):
    """The demo's evaluation: every held-out question under its 10 budget-forcing settings."""
    import benchmarks
    import chat
    import eval as ev
    model_dir, data = os.path.join(args.demo, "train", "final"), os.path.join(args.demo, "test.jsonl")
    if not os.path.isdir(model_dir):
        raise SystemExit(f"{model_dir}: no demo model; run make demo first")
    model = hf.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = chat.load_tokenizer(model_dir)
    questions = [q["prompt"] for q in benchmarks.load_benchmark("mini", data)]
    names = ["8", "16", "24", "32", "48", "64", "96", "none", "wait1", "wait2"]
    settings = [ev.parse_setting(s)[1] for s in names]
    fed = {}

    def run(share):
        stats = {}
        sample.generate(model, tokenizer, questions, settings=settings, max_tokens=512, batch_size=64, share=share,
                        stats=stats, progress=False)
        fed[share] = stats["fed"]
    print(f"\nThe demo's sweep: {len(questions)} held-out questions x {len(names)} settings ({' '.join(names)}), "
          f"greedy, fp32, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | shared (forks) | every setting alone | shared / alone |\n|---|---|---|---|")
    compare("wall time", lambda: run(True), lambda: run(False), args.repeats)
    print(f"| tokens fed | {fed[True]:,} | {fed[False]:,} | {fed[True] / fed[False]:.2f}x |")


def bench_plan(args):
    """train.py's memory_plan against reality on a CPU: the peak resident memory of two real steps
    (fp32, one process, activation checkpointing, one sequence of --tokens tokens, so the AdamW state
    exists) at Qwen2.5-0.5B's shape, minus the same at a tiny shape (the process's own baseline:
    Python, torch, the tokenizer), against the plan's difference. Random init: nothing downloaded."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import chat
    import train
    root = tempfile.mkdtemp(prefix="bench-plan-")

    def measure(cfg):
        d = os.path.join(root, f"h{cfg.hidden_size}")
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf.config_json(cfg, "float32"), f)
        chat.build_byte_tokenizer(d)
        with open(os.path.join(d, "data.jsonl"), "w") as f:  # byte tokens: about one per character
            for k in range(2):
                f.write(json.dumps({"question": "q", "thinking": "x" * (args.tokens - 60), "answer": str(k)}) + "\n")
        subprocess.run([sys.executable, "train.py", "--model", d, "--init", "random", "--data", os.path.join(d, "data.jsonl"),
                        "--device", "cpu", "--dtype", "float32", "--global-batch", "1", "--epochs", "1",
                        "--activation-checkpointing", "on", "--out", os.path.join(d, "out")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = train.read_log(os.path.join(d, "out", "log.jsonl"))
        with torch.device("meta"):
            n = M.num_params(M.Qwen2(cfg))
        plan = train.memory_plan(cfg, n, 1, args.tokens, True, train.CE_CHUNK, compute_bytes=4, cuda=False)
        return max(r["peak_mem_gb"] for r in log), sum(plan.values()) / 2 ** 30

    tiny = M.Config(vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=False)
    (tiny_measured, tiny_plan), (measured, plan) = measure(tiny), measure(hf.known_shape("Qwen2.5-0.5B"))
    print(f"\ntrain.py's memory plan vs peak RSS, {args.tokens} tokens, fp32, CPU, 2 steps")
    print("| shape | measured peak RSS | plan | plan / measured |\n|---|---|---|---|")
    print(f"| tiny (the process baseline) | {tiny_measured:.2f} GiB | {tiny_plan:.3f} GiB | - |")
    print(f"| Qwen2.5-0.5B, minus the baseline | {measured - tiny_measured:.2f} GiB | {plan - tiny_plan:.2f} GiB "
          f"| {(plan - tiny_plan) / (measured - tiny_measured):.2f} |")
    shutil.rmtree(root)


def bench_export(args):
    """train.py with s1's recipe (lr 1e-5, 5 % warm-up, cosine, AdamW 0.9/0.95, wd 1e-4, clip 1, 315
    steps of 16, fp32 master weights) on a small model whose initial weights are bf16, as Qwen2.5's
    are; fp32 compute, since bf16 matmuls crawl on a CPU (Adam's step size hardly depends on it). Then count the weights training changed whose bf16 rounding is their
    initial value again: what a bf16 export would erase."""
    import random
    import subprocess
    import sys
    import tempfile
    from safetensors.torch import load_file
    import chat
    root = tempfile.mkdtemp(prefix="bench-export-")
    cfg = M.Config(vocab_size=320, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, tie_word_embeddings=False)
    model = M.Qwen2(cfg)
    model.init_weights(seed=0)
    start = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # on the bf16 grid
    chat.build_byte_tokenizer(os.path.join(root, "init"))
    hf.save_pretrained(start, os.path.join(root, "init"), cfg=cfg, tokenizer_dir=os.path.join(root, "init"))
    rng = random.Random(0)
    with open(os.path.join(root, "data.jsonl"), "w") as f:  # 1,000 examples: 63 steps of 16 per epoch
        for _ in range(1000):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            steps = " ".join(f"{a}+{k}={a + k}." for k in range(1, rng.randint(2, 8)))
            f.write(json.dumps({"question": f"What is {a}+{b}?", "thinking": f"{steps} So {a + b}.",
                                "answer": str(a + b)}) + "\n")
    out = os.path.join(root, "run")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--model", os.path.join(root, "init"), "--data",
                    os.path.join(root, "data.jsonl"), "--device", "cpu", "--dtype", "float32", "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = load_file(os.path.join(out, "final", "model.safetensors"))
    print(f"\nbf16 export after s1's schedule: {cfg.num_hidden_layers}-layer model, hidden {cfg.hidden_size}, "
          f"315 steps in {time.perf_counter() - t0:.0f} s")
    print("| weights | changed by training | of those, rounding to bf16 gives back the initial value "
          "| rounding error / update (L2) |\n|---|---|---|---|")
    groups = {"all": lambda k: True, "matrices": lambda k: "norm" not in k and "embed" not in k,
              "embedding": lambda k: "embed" in k, "RMSNorm": lambda k: "norm" in k}
    for name, keep in groups.items():
        keys = [k for k in start if keep(k)]
        init = torch.cat([start[k].float().flatten() for k in keys])
        trained = torch.cat([final[k].float().flatten() for k in keys])
        changed = trained != init
        rounded = trained.to(torch.bfloat16).float()
        erased = changed & (rounded == init)
        print(f"| {name} | {changed.float().mean():.1%} of {len(init):,} | {erased.sum() / changed.sum():.1%} "
              f"| {(rounded - trained).norm() / (trained - init).norm():.2f} |")
    shutil.rmtree(root)


# ----------------------------------------------------------------------------------------------
# make gpu-check: run first on any GPU machine. Writes report.json and report.md to --report-dir.

ROOT = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(ROOT, "data", "qwen2.5-tokenizer")  # Qwen2.5's own, in the repo: real vocab, offline
# On a CPU: the same code paths on 2 layers (with Qwen's vocabulary for train.py, which tokenizes with it).
TINY = M.Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=True)
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100 80GB HBM3": 3.35e12, "H100 SXM": 3.35e12}  # by device name (SXM: HBM3)
# Relative L2 error that is rounding, not a bug: bf16 through 0.5B's 24 layers gives 2-3 % (measured on
# a CPU); a wrong mask or position is O(1). The rows-SDPA path is the baseline the others should match.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.1}


def errors(ours, ref):
    """(largest absolute difference, its L2 norm relative to the reference's)."""
    d = ours.float() - ref.to(ours.device).float()
    return d.abs().max().item(), (d.norm() / ref.float().norm()).item()


def grad_errors(model, ref_grads):
    """errors() over every parameter's gradient at once."""
    worst = num = den = 0.0
    for p, r in zip(model.parameters(), ref_grads):
        d = p.grad.float() - r.to(p.device)
        worst, num, den = max(worst, d.abs().max().item()), num + d.pow(2).sum().item(), den + r.pow(2).sum().item()
    return worst, (num / den) ** 0.5


@contextlib.contextmanager
def packed_kernel(flash, varlen):
    """model.py's packed attention with only these kernels available (None, None: SDPA per document)."""
    saved = M.flash_attn_varlen_func, M.varlen_attn
    M.flash_attn_varlen_func, M.varlen_attn = flash, varlen
    try:
        yield
    finally:
        M.flash_attn_varlen_func, M.varlen_attn = saved


def paged_logits(model, rows, prompt_lens, steps, bs):
    """As sample.Engine runs them: the prompts prefilled into a paged KV cache of `bs`-token blocks
    in one packed forward, then `steps` tokens of each row (the reference's: teacher forcing)
    decoded one per forward. Logits (steps + 1, rows, vocab): the prefill's last, then each decode
    step's; and the kernel that decoded (sample.paged_kernel: None is gather + SDPA)."""
    device, cfg = model.lm_head.weight.device, model.cfg
    need = [-(-(p + steps) // bs) for p in prompt_lens]
    pool = sample.BlockPool(cfg, sum(need), bs, cfg.num_key_value_heads, device, model.lm_head.weight.dtype)
    seqs = [sample.Seq(r[:p], rows=[], blocks=[pool.allocate() for _ in range(n)])
            for r, p, n in zip(rows, prompt_lens, need)]
    out = []
    for _ in range(steps + 1):
        batch = sample.PagedBatch(pool, seqs, device)
        new = torch.tensor([t for s in seqs for t in s.ids[s.cached:]], device=device)
        out.append(model(new.view(batch.positions.shape), cache=batch))
        for s, r in zip(seqs, rows):
            s.cached, s.ids = len(s.ids), r[:len(s.ids) + 1]
    return torch.stack(out), sample.paged_kernel(pool.k, bs)


def check_attention(ref, model, seq, steps):
    """Logits and gradients of every attention path against the fp32 CPU model `ref`, on two
    documents of seq/2 tokens: as two rows (SDPA), packed in one row (the varlen kernels), or
    prefilled and decoded through sample.py's paged KV cache (logits only: inference)."""
    device, cuda, half = model.lm_head.weight.device, model.lm_head.weight.is_cuda, seq // 2
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ref.cfg.vocab_size, (2, half), generator=gen)
    targets = torch.randint(0, ref.cfg.vocab_size, (2 * half,), generator=gen)
    loss = lambda logits: F.cross_entropy(logits.flatten(0, 1).float(), targets.to(logits.device))
    ref_logits = ref(ids)
    loss(ref_logits).backward()
    ref_logits, ref_grads = ref_logits.detach(), [p.grad for p in ref.parameters()]
    ids, pos = ids.to(device), torch.arange(half, device=device).repeat(2)[None]  # restarts at 0: 2 documents
    packed = lambda m: m(ids.view(1, -1), position_ids=pos).view(2, half, -1)
    flash, varlen = M.flash_attn_varlen_func, M.varlen_attn
    missing = lambda fn, what: f"skipped: {what} not installed" if fn is None else None if cuda else "skipped: CUDA only"
    paths = [("rows: SDPA", None, (flash, varlen), lambda m: m(ids)),
             ("packed: flash-attn varlen", missing(flash, "flash-attn"), (flash, None), packed),
             ("packed: torch varlen_attn", missing(varlen, "torch.nn.attention.varlen"), (None, varlen), packed),
             ("packed: SDPA per document", None, (None, None), packed)]
    tol, out = TOLERANCE[model.lm_head.weight.dtype], []
    for name, skipped, kernels, forward in paths:
        if skipped:
            out.append(dict(path=name, note=skipped))
            continue
        model.zero_grad(set_to_none=True)
        try:  # a kernel that fails is this path's result, not the end of the check
            with packed_kernel(*kernels):
                logits = forward(model)
                loss(logits).backward()
        except Exception as e:
            out.append(dict(path=name, note=f"error: {type(e).__name__}: {e}", ok=False))
            continue
        (la, lr), (ga, gr) = errors(logits, ref_logits), grad_errors(model, ref_grads)
        out.append(dict(path=name, logits_max_abs=la, logits_rel=lr, grad_max_abs=ga, grad_rel=gr, ok=max(lr, gr) < tol))
    model.zero_grad(set_to_none=True)
    prompts = [half - steps, half - steps - 3]  # unequal: decode must keep the shorter row's padding out
    at = lambda j: ref_logits[[0, 1], [p - 1 + j for p in prompts]]  # the reference j tokens after the prompt
    decoded = torch.stack([at(j) for j in range(1, steps + 1)])
    # the Engine's block size (a paged kernel's, where one runs), and 16-token blocks: gather + SDPA
    engine_bs = sample.PAGED_BLOCK if sample.paged_kernel(model.lm_head.weight, sample.PAGED_BLOCK) else 16
    for bs in dict.fromkeys([engine_bs, 16]):
        try:
            with torch.no_grad():
                paged, kernel = paged_logits(model, ids.tolist(), prompts, steps, bs)
        except Exception as e:
            out.append(dict(path=f"KV cache: {bs}-token blocks", note=f"error: {type(e).__name__}: {e}", ok=False))
            continue
        for name, ours, theirs in ((f"KV cache: paged prefill, {bs}-token blocks", paged[0], at(0)),
                                   (f"KV cache: paged decode, {kernel or 'gather + SDPA'}", paged[1:], decoded)):
            la, lr = errors(ours, theirs)
            out.append(dict(path=name, logits_max_abs=la, logits_rel=lr, ok=lr < tol))
    return dict(tokens=seq, tolerance=tol, paths=out)


def check_sdpa(cfg, device, dtype, seq, train_seq):
    """Which SDPA kernel each of the model's SDPA calls selects at its shape: the aten op the
    profiler records (aten::_scaled_dot_product_flash_attention, _efficient_attention,
    _cudnn_attention or _attention_math; cuDNN's may win over flash on an H100 with cuDNN >= 9.15),
    and on CUDA whether the call runs with only the flash and efficient kernels allowed (never the
    math kernel, which copies K and V to every query head). The decode calls are sample.py's
    fallback (no paged kernel): one query per row over its gathered keys, no mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    def call(batch, q_len, kv_len, causal):  # laid out as model.py and sample.py call it: (B, T, H, D) transposed
        q = torch.randn(batch, q_len, H, D, device=device, dtype=dtype).transpose(1, 2)
        k, v = (torch.randn(batch, kv_len, KV, D, device=device, dtype=dtype).transpose(1, 2) for _ in range(2))
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    out = []
    for name, fn in ((f"train, unpacked row: 1 x {train_seq:,}, causal", call(1, train_seq, train_seq, True)),
                     (f"rows/prefill: 1 x {seq:,}, causal", call(1, seq, seq, True)),
                     (f"decode fallback: 1 row, {seq:,} cached", call(1, 1, seq, False)),
                     (f"decode fallback: 64 rows of one length, {seq:,} cached", call(64, 1, seq, False))):
        with profile(activities=[ProfilerActivity.CPU]) as prof:  # the op's name is the kernel SDPA chose
            fn()
        row = dict(shape=name, selected=sorted({e.name for e in prof.events()
                                                 if e.name.startswith("aten::_scaled_dot_product")}))
        if device.type == "cuda":
            try:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                    fn()
                row["flash_or_efficient"] = True
            except RuntimeError as e:
                row["flash_or_efficient"], row["note"] = False, str(e).splitlines()[0][:200]
        out.append(row)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return out


def write_config(cfg, folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf.config_json(cfg), f)
    return folder


def digit_data(path, lengths, seed=0):
    """One example per length, thinking of that many random digits: Qwen's tokenizer makes each
    digit a token, so an example is about its length in tokens (more: cut at --block-size)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for n in lengths:
            thinking = "".join(rng.choices("0123456789", k=n))
            f.write(json.dumps({"question": "Go on.", "thinking": thinking, "answer": "0"}) + "\n")
    return path


def run_train(launcher, model_dir, data, out, device, dtype, block, batch):
    """train.py as one runs it (random init from config.json only), FSDP2, packed, with activation
    checkpointing; its log.jsonl records."""
    import train
    cmd = launcher + ["train.py", "--model", model_dir, "--init", "random", "--tokenizer", TOKENIZER, "--data", data,
                      "--out", out, "--epochs", "1", "--global-batch", str(batch), "--block-size", str(block), "--pack",
                      "--activation-checkpointing", "on", "--device", device, "--dtype", dtype, "--save-dtype", "bfloat16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return train.read_log(os.path.join(out, "log.jsonl"))


def check_train(tmp, shapes, device, dtype, block, steps):
    """Each shape's training step: tokens/s and MFU (median after the first step, which warms up),
    peak memory, and train.py's memory plan for it."""
    import train
    out = []
    for name, cfg in shapes.items():
        data = digit_data(os.path.join(tmp, f"{name}.jsonl"), [block + 100] * steps)  # each step: one full row
        log = run_train([sys.executable], write_config(cfg, os.path.join(tmp, name)), data,
                        os.path.join(tmp, f"run-{name}"), device.type, dtype, block, 1)
        with torch.device("meta"):
            n_params = M.num_params(M.Qwen2(cfg))
        parts = train.memory_plan(cfg, n_params, 1, block, True, train.CE_CHUNK)
        # the log's peak is torch.cuda.max_memory_allocated: it cannot see the CUDA context and NCCL buffers
        plan = sum(v for k, v in parts.items() if "context" not in k) / 2 ** 30
        timed, peak = log[1:] or log, max(r["peak_mem_gb"] for r in log)
        out.append(dict(shape=name, tokens=block, steps=len(log),
                        tokens_per_s=statistics.median(r["tokens_per_s"] for r in timed),
                        mfu=statistics.median(r["mfu"] for r in timed) if "mfu" in log[0] else None,
                        peak_mem_gib=peak, planned_mem_gib=plan,  # on a CPU peak is resident memory: no comparison
                        plan_error=plan / peak - 1 if device.type == "cuda" else None))
    return out


@torch.no_grad()
def random_model(cfg, device, dtype, seed=0):
    """A Qwen2 of shape cfg with random weights made on the device itself (7B's weights drawn on a
    CPU would take minutes): for timings, where the values do not matter."""
    with torch.device("meta"):
        model = M.Qwen2(cfg)
    model = model.to(dtype).to_empty(device=device)  # allocated once, in dtype
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith("norm.weight") else p.normal_(0, 0.02)
    return model.eval()


@torch.no_grad()
def check_decode(model, new, repeats):
    """Greedy decode tokens/s through sample.Engine at batch 1 and 64. At batch 1 a step reads every
    weight and the KV cache once, so bytes per token / time against the HBM bandwidth is the
    roofline; the embedding table is not counted unless it is also the LM head (a step reads one
    row of it). The shape must make a step bandwidth-bound: 7B on an H100 (1.5B's 3 GB read in
    about 1 ms would measure kernel launches, not bandwidth, without CUDA graphs)."""
    cfg, device, dtype = model.cfg, model.lm_head.weight.device, model.lm_head.weight.dtype
    out = {}
    for batch in (1, 64):
        prompts = torch.randint(0, cfg.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(0)).tolist()
        run = lambda: engine_run(model, prompts, [new] * batch, batch, False)
        run()  # warm-up
        out[f"batch_{batch}_tokens_per_s"] = batch * new / statistics.median(seconds(run) for _ in range(repeats))
    read = lambda name: cfg.tie_word_embeddings or name != "model.embed_tokens.weight"
    weights = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if read(name))
    per_token = weights + sample.kv_bytes_per_token(cfg, cfg.num_key_value_heads, dtype) * (16 + new / 2)  # mean context
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)
    achieved = per_token * out["batch_1_tokens_per_s"]
    kernel = sample.paged_kernel(model.lm_head.weight, sample.PAGED_BLOCK) or "gather + SDPA"
    return dict(out, shape=f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}", kernel=kernel, new_tokens=new,
                bytes_per_token=per_token, achieved_gb_s=achieved / 1e9, hbm_gb_s=peak and peak / 1e9,
                roofline_fraction=peak and achieved / peak, note=None if peak else f"unknown HBM bandwidth for {name}")


def check_two_gpus(tmp, cfg, device="cuda"):
    """train.py's losses on 2 GPUs vs 1, and tensor-parallel greedy tokens vs 1 GPU (device="cpu":
    the same on 2 gloo processes, to try this function without GPUs)."""
    if device == "cuda" and torch.cuda.device_count() < 2:
        return dict(skipped=f"needs 2 GPUs, {torch.cuda.device_count()} visible")
    dtype, path = "bfloat16" if device == "cuda" else "float32", lambda name: os.path.join(tmp, name)
    launchers = {1: [sys.executable], 2: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc-per-node", "2"]}
    data = digit_data(path("two.jsonl"), [random.Random(i).randint(300, 2000) for i in range(8)])
    losses = {w: [r["loss"] for r in run_train(launcher, write_config(cfg, path("two")), data, path(f"two-{w}"),
                                               device, dtype, 2048, 4)] for w, launcher in launchers.items()}
    init = M.Qwen2(cfg)
    init.init_weights(seed=0)
    hf.save_pretrained({k: v.to(getattr(torch, dtype)) for k, v in init.state_dict().items()}, path("ckpt"), cfg=cfg,
                      tokenizer_dir=TOKENIZER)
    with open(path("q.jsonl"), "w") as f:
        f.writelines(json.dumps({"question": f"What is {i} + {i}?"}) + "\n" for i in range(4))
    texts = {}
    for w, launcher in launchers.items():
        subprocess.run(launcher + ["sample.py", "--model", path("ckpt"), "--input", path("q.jsonl"), "--output",
                                   path(f"tp{w}.jsonl"), "--max-tokens", "256", "--max-thinking-tokens", "128",
                                   "--dtype", dtype, "--device", device], cwd=ROOT, check=True, capture_output=True)
        with open(path(f"tp{w}.jsonl")) as f:
            texts[w] = [json.loads(line)["text"] for line in f]
    same = sum(a == b for a, b in zip(texts[1], texts[2]))  # bf16 sums in another order may flip a near-tie
    return dict(train_losses_1_gpu=losses[1], train_losses_2_gpus=losses[2], tp_identical_rows=f"{same}/{len(texts[1])}",
                train_max_loss_diff=max(abs(a - b) for a, b in zip(losses[1], losses[2])))


def goals(r):
    """The targets, each with what this run measured and pass / FAIL (not measured: e.g. on a CPU)."""
    train = {x["shape"]: x for x in r["train"]} if isinstance(r["train"], list) else {}
    mfu = train.get("1.5B", {}).get("mfu")
    plan = max((abs(x["plan_error"]) for x in train.values() if x["plan_error"] is not None), default=None)
    roofline = r["decode"].get("roofline_fraction")
    fused = [x["flash_or_efficient"] for x in r["sdpa_kernels"] if "flash_or_efficient" in x] \
        if isinstance(r["sdpa_kernels"], list) else []
    judge = lambda goal, measured, met: dict(goal=goal, measured=measured,
                                             result="not measured" if measured is None else "pass" if met else "FAIL")
    return [judge("train MFU >= 0.40 at 1.5B, 16K tokens", mfu, mfu is not None and mfu >= 0.40),
            judge("memory plan within 0.10 of the measured peak", plan, plan is not None and plan <= 0.10),
            judge("decode at batch 1 >= 0.60 of the HBM roofline (7B)", roofline, roofline is not None and roofline >= 0.60),
            judge("every SDPA call runs with only flash/efficient allowed (never math)",
                  f"{sum(fused)}/{len(fused)}" if fused else None, all(fused))]


TABLES = [("attention", "Attention vs fp32 CPU: {tokens} tokens, ok below {tolerance} relative L2 error",
           ["path", "logits_max_abs", "logits_rel", "grad_max_abs", "grad_rel", "ok", "note"]),
          ("sdpa_kernels", "SDPA kernel per shape", ["shape", "selected", "flash_or_efficient", "note"]),
          ("train", "train.py step: FSDP2 on one device, packed, activation checkpointing",
           ["shape", "tokens", "steps", "tokens_per_s", "mfu", "peak_mem_gib", "planned_mem_gib", "plan_error"]),
          ("decode", "Decode through sample.Engine, greedy, {new_tokens} new tokens after 16, {shape}, {kernel}",
           ["batch_1_tokens_per_s", "batch_64_tokens_per_s", "achieved_gb_s", "hbm_gb_s", "roofline_fraction", "note"]),
          ("two_gpus", "Two GPUs", ["train_losses_1_gpu", "train_losses_2_gpus", "train_max_loss_diff", "tp_identical_rows"]),
          ("goals", "Goals", ["goal", "measured", "result"])]


def cell(v):
    if isinstance(v, list):
        return ", ".join(map(cell, v))
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return "—" if v is None else str(v)


def markdown(report):
    """report.md: a table per section (an error or a skip in its place)."""
    lines = [f"# gpu-check: {report['device']}, torch {report['torch']} (CUDA {report.get('cuda')}, cuDNN "
             f"{report.get('cudnn')}), {report['mode']}"]
    for name, title, keys in TABLES:
        part = report[name]
        if isinstance(part, dict) and ("error" in part or "skipped" in part):
            lines += ["", f"## {title.split(':')[0]}", "", next(f"{k}: {part[k]}" for k in ("error", "skipped") if k in part)]
            continue
        rows = part["paths"] if name == "attention" else part if isinstance(part, list) else [part]
        lines += ["", f"## {title.format(**part) if isinstance(part, dict) else title}", "",
                  f"| {' | '.join(keys)} |", "|" + "---|" * len(keys)]
        lines += [f"| {' | '.join(cell(row.get(k)) for k in keys)} |" for row in rows]
    return "\n".join(lines) + "\n"


def bench_gpu(args):
    # A GPU check never quietly runs on a CPU: without a usable GPU it stops in one line (cli.device).
    # Only an explicit --device cpu runs the tiny CPU shapes (CI's run of every line of this check).
    device = cli.device("cpu" if args.device == "cpu" else "cuda")
    gpu, dtype = device.type == "cuda", torch.bfloat16
    # full shapes on a GPU; on a CPU the same paths on tiny ones, so that CI runs every line
    cfg, seq, steps, block, new = (hf.known_shape("Qwen2.5-0.5B"), 2048, 16, 16384, 256) if gpu else (TINY, 128, 8, 256, 16)
    shapes = ({s: hf.known_shape(f"Qwen2.5-{s}") for s in ("0.5B", "1.5B")} if gpu
              else {"tiny": dataclasses.replace(TINY, vocab_size=151936)})
    ref = M.Qwen2(cfg)  # fp32 on the CPU: the reference
    ref.init_weights(seed=0)
    model = copy.deepcopy(ref).to(device, dtype)
    tmp = tempfile.mkdtemp(prefix="gpu-check-")
    report = dict(device=torch.cuda.get_device_name(device) if gpu else "CPU", torch=torch.__version__,
                  cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if gpu else None,
                  mode="Qwen2.5 shapes" if gpu else "CPU: tiny shapes, GPU-only numbers not measured")
    sections = dict(attention=lambda: check_attention(ref, model, seq, steps),
                    sdpa_kernels=lambda: check_sdpa(cfg, device, dtype, seq, 20480 if gpu else 2 * seq),
                    # fp32 on a CPU, which train.py's CPU runs use (bf16 matmuls crawl there)
                    train=lambda: check_train(tmp, shapes, device, "bfloat16" if gpu else "float32", block, 4 if gpu else 2),
                    decode=lambda: check_decode(random_model(hf.known_shape("Qwen2.5-7B"), device, dtype) if gpu else ref,
                                                new, 3 if gpu else 1),
                    two_gpus=lambda: check_two_gpus(tmp, shapes["0.5B"]) if gpu else dict(skipped="a CPU run"))
    for name, fn in sections.items():
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # one broken part must not hide the others' results
            report[name] = dict(error=f"{type(e).__name__}: {e}")
        if gpu:
            torch.cuda.empty_cache()  # give the next section's subprocesses the memory back
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    report["goals"] = goals(report)
    os.makedirs(args.report_dir, exist_ok=True)
    with open(os.path.join(args.report_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.report_dir, "report.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    shutil.rmtree(tmp)


BENCHES = {"forward": bench_forward, "train": bench_train, "decode": bench_decode, "grade": bench_grade,
           "batching": bench_batching, "serve": bench_serve, "sweep": bench_sweep, "export": bench_export,
           "plan": bench_plan, "gpu": bench_gpu}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help=f"benchmarks to run, from {sorted(BENCHES)} (default: all)")
    parser.add_argument("--tokens", type=cli.at_least(16), default=512, help="sequence length")
    parser.add_argument("--repeats", type=cli.at_least(1), default=5, help="timed runs per case (median reported)")
    parser.add_argument("--new-tokens", type=cli.at_least(1), default=128, help="decode, serve: tokens generated per row")
    parser.add_argument("--prompts", type=cli.at_least(1), default=64, help="batching: prompts in the mixed workload")
    parser.add_argument("--slots", type=cli.at_least(1), default=16, help="batching: sequences decoded together")
    parser.add_argument("--demo", default="runs/demo", help="sweep: make demo's output directory")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="gpu: cuda (auto means cuda: a GPU check never falls back to a CPU) or cpu (tiny shapes)")
    parser.add_argument("--report-dir", default="runs/gpu-check", help="gpu: where report.json and report.md go")
    args = parser.parse_args()
    for which in args.which or [b for b in BENCHES if b != "gpu"]:  # gpu is a check, not a comparison: asked by name
        if which not in BENCHES:
            parser.error(f"unknown benchmark {which!r}; choose from {sorted(BENCHES)}")
        BENCHES[which](args)
