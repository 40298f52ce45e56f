"""Benchmarks: ours against the transformers reference, in one process, on the same weights and
inputs.

    python -m tools.bench forward   # model.py forward vs transformers Qwen2ForCausalLM
    python -m tools.bench train     # one training step (forward, loss, backward, AdamW) of each
    python -m tools.bench grade     # benchmarks.py's grader vs plain math-verify on MATH500's
                                    # 500 solutions
    python -m tools.bench decode    # sample.py's decoder vs transformers generate, and the tokens
                                    # budget forcing feeds vs re-submitting the prompt every round
    python -m tools.bench batching  # continuous batching vs static batches vs transformers
                                    # generate, on prompts whose generation lengths span 20x
    python -m tools.bench serve     # 8 concurrent clients of serve.py vs the same 8 requests
                                    # in turn
    python -m tools.bench sweep     # the demo's evaluation sweep, forked from shared thinking vs
                                    # every setting alone (needs make demo's runs/demo)
    python -m tools.bench plan      # not a timing: train.py's memory planner against the peak
                                    # memory of real steps (CPU, fp32, 0.5B shape minus a tiny
                                    # one; --tokens)
    python -m tools.bench retry     # not a timing: what rejection sampling's re-prefill of a
                                    # prompt costs of a retry's tokens (AIME24, MATH500)
    python -m tools.bench export    # not a timing: what a bf16 export would round away of a
                                    # training run with s1's schedule (why train.py saves fp32)

make gpu-check (python -m tools.gpu_check) is the first command on a GPU machine: kernels'
numerics, train MFU and memory, the decode roofline, 2 GPUs.

Machines are noisy: every figure is the median of --repeats timed runs after one warm-up, and runs
of ours and the reference alternate so that drift hits both. The ratio ours/reference is what to
quote (< 1.0 means ours is faster).
"""
import argparse
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

import model as M
from machinery import cli, engine, plan
from machinery import hf_checkpoint as hf
import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: tools/..

# Qwen2.5-0.5B's shape (its config.json), with random weights: nothing is downloaded.
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
                  tie_word_embeddings=True, max_position_embeddings=32768)

# A Qwen2-shaped model of 31M parameters (8 layers, hidden 512, GQA 8/2, an 8K vocabulary): big
# enough that a CPU step is matmuls, not Python overhead; small enough for a 2-core machine.
MIXED = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
             tie_word_embeddings=False)

# rows never end early: exactly their length, like min_new_tokens
NO_STOP = dict(im_start=-1, im_end=-1, eos=[])


def build_pair(dtype, copy=False):
    """transformers' Qwen2ForCausalLM with random weights, and ours with the same values: the very
    same tensors, or (copy=True, for training, where each model updates its own) a copy."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    ref = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype).eval()
    with torch.device("meta"):
        ours = M.Qwen2(M.Config(**QWEN25_05B, torch_dtype=str(dtype).removeprefix("torch.")))
    weights = {k: v.clone() if copy else v for k, v in ref.state_dict().items()}
    ours.load_state_dict(weights, assign=True)
    ours.lm_head.weight = ours.model.embed_tokens.weight
    return ours.eval(), ref


def seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(name, ours_fn, ref_fn, repeats):
    """Median time of each after one warm-up; single runs alternate so that drift hits both
    alike."""
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
        compare(f"{tag}, all logits", lambda: ours(ids), lambda: ref(ids, use_cache=False),
                args.repeats)

        def ours_prefill():  # a paged KV-cache prefill, as engine.py runs it: only the last logits
            pool = engine.BlockPool(ours.cfg, -(-args.tokens // 16), 16,
                                    ours.cfg.num_key_value_heads, "cpu", dtype)
            seq = engine.Seq(ids[0].tolist(), rows=[],
                             blocks=[pool.allocate() for _ in range(len(pool.refs))])
            ours(ids, cache=engine.PagedBatch(pool, [seq], "cpu"))
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
    print(f"\nGreedy decoding of {args.new_tokens} new tokens after a 16-token prompt, "
          f"random Qwen2.5-0.5B-shaped model, bf16, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats}")
    print("| case | ours | transformers generate | ours / transformers |\n|---|---|---|---|")
    ours, ref = build_pair(torch.bfloat16)

    for batch in (1, 8):
        prompts = torch.randint(0, 151643, (batch, 16),
                                generator=torch.Generator().manual_seed(batch))

        def ours_run():
            runner = engine.Engine(ours, 16 + args.new_tokens, max_rows=batch)
            rows = [sample.Row(prompt_len=16, max_len=16 + args.new_tokens, special=NO_STOP,
                               ignores_left=0, phase="answer") for _ in range(batch)]
            for prompt, row in zip(prompts.tolist(), rows):
                runner.add(prompt, [row])
            while runner.busy():
                runner.step()
            assert all(len(r.tokens) == args.new_tokens for r in rows)

        def ref_run():
            out = ref.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               pad_token_id=0)
            assert out.shape[1] == 16 + args.new_tokens

        tokens = batch * args.new_tokens
        o, r = compare(f"batch {batch} ({tokens} tokens)", ours_run, ref_run, args.repeats)
        print(f"|   tokens/s | {tokens / o:.1f} | {tokens / r:.1f} | {r / o:.2f}x faster |")

    # Tokens run through the model for one question with K "Wait" extensions. Ours feeds each token
    # once. s1's harness re-submits the prompt and everything so far at every round (and once more
    # for the answer), so it pays the prefix again per round. Segment lengths: the s1-32B AIME24
    # averages of docs/s1.md §7.1 (5,300 thinking tokens without forcing, about +700 per "Wait").
    print("\nTokens fed through the model for one AIME-like question (prompt 150, "
          "first thinking 5300, +700 per Wait, answer 200)")
    print("| K Waits | ours | re-submit each round | ratio |\n|---|---|---|---|")
    prompt, first, per_wait, wait, header, answer = 150, 5300, 700, 1, 2, 200
    for k in (1, 2, 4):
        segments = [first] + [per_wait] * k
        ours_fed = prompt + sum(segments) + k * wait + header + answer
        prefix, resubmit = prompt, 0
        # each round prefills the whole prefix again, then generates its segment
        for seg in segments:
            resubmit += prefix + seg
            prefix += seg + wait
        # the answer round re-submits everything once more
        resubmit += prefix - wait + header + answer
        print(f"| {k} | {ours_fed:,} | {resubmit:,} | {resubmit / ours_fed:.2f}x |")


def bench_grade(args):
    """Our grader (benchmarks.py: s1's answer extraction, integer compare, math-verify with the
    answer re-boxed) against plain math-verify on the whole text, both on MATH500's 500 reference
    solutions."""
    from machinery import benchmarks
    from math_verify import parse, verify
    questions = benchmarks.load_benchmark("math500")
    with open(benchmarks.BENCHMARKS["math500"][3]) as f:
        solutions = [json.loads(line)["solution"] for line in f]
    counts = {}

    def ours():
        # a cold grade of each answer: no parses kept from the previous run
        benchmarks.GOLD_CACHE.clear()
        counts["ours"] = sum(benchmarks.grade("math500", q, s)["correct"]
                             for q, s in zip(questions, solutions))

    # the gold in $...$: bare, math-verify finds only 392 of the 500 golds' expressions
    def plain():
        counts["plain"] = sum(verify(parse(f"${q['gold']}$"), parse(s))
                              for q, s in zip(questions, solutions))

    print(f"\nGrading MATH500's 500 reference solutions against the official answers, "
          f"{os.cpu_count()} CPUs, one process, median of {args.repeats}")
    print(f"first pass of ours, math-verify's parser cold: {seconds(ours):.3f} s")
    print("| case | ours | plain math-verify | ours / plain |\n|---|---|---|---|")
    compare("500 solutions", ours, plain, args.repeats)
    print(f"correct: ours {counts['ours']}/500, plain math-verify {counts['plain']}/500")


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
    rng = random.Random(seed)
    prompts = [[rng.randrange(8192) for _ in range(prompt_len)] for _ in range(n)]
    lengths = [round(shortest * (longest / shortest) ** rng.random()) for _ in range(n)]
    return prompts, lengths


def engine_run(model, prompts, lengths, slots, static):
    """Generate lengths[i] tokens after prompts[i], `slots` sequences at a time: continuously
    (a finished row's slot goes to the next prompt at once) or in static batches (the next batch
    starts when the slowest row of this one ends)."""
    if static:
        chunks = [range(i, min(i + slots, len(prompts))) for i in range(0, len(prompts), slots)]
    else:
        chunks = [range(len(prompts))]
    steps = 0
    for chunk in chunks:
        runner = engine.Engine(model, len(prompts[0]) + max(lengths), max_rows=slots)
        rows = [sample.Row(prompt_len=len(prompts[i]), max_len=len(prompts[i]) + lengths[i],
                           special=NO_STOP, ignores_left=0, phase="answer") for i in chunk]
        for i, row in zip(chunk, rows):
            runner.add(prompts[i], [row])
        while runner.busy():
            runner.step()
        steps += runner.steps
        assert [len(r.tokens) for r in rows] == [lengths[i] for i in chunk]
    return steps


@torch.no_grad()
def bench_batching(args):
    ours, ref = mixed_pair()
    prompts, lengths = mixed_workload(args.prompts)
    slots, total = args.slots, sum(lengths)
    print(f"\n{len(prompts)} prompts of 32 tokens, "
          f"generation lengths {min(lengths)}-{max(lengths)} (log-uniform, {total:,} tokens), "
          f"{slots} slots, greedy, a random 31M-parameter Qwen2-shaped model, fp32, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")

    def hf_run():  # static batches; generate runs each batch until its longest row is done
        for i in range(0, len(prompts), slots):
            batch = torch.tensor(prompts[i:i + slots])
            new = max(lengths[i:i + slots])
            ref.generate(batch, attention_mask=torch.ones_like(batch), do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
    continuous = lambda: engine_run(ours, prompts, lengths, slots, False)
    static = lambda: engine_run(ours, prompts, lengths, slots, True)
    print("| case | continuous batching | other | continuous / other |\n|---|---|---|---|")
    c, s_ = compare("vs our engine in static batches", continuous, static, args.repeats)
    c2, h = compare("vs transformers generate, static batches", continuous, hf_run, args.repeats)
    print(f"tokens/s: continuous {total / c:.0f}, static {total / s_:.0f} ({s_ / c:.2f}x), "
          f"transformers {total / h:.0f} ({h / c2:.2f}x)")
    static_steps = static()
    hf_steps = sum(max(lengths[i:i + slots]) + 1 for i in range(0, len(prompts), slots))
    print(f"forward passes: continuous {continuous()}, static {static_steps} "
          f"(rows that finished leave the batch), "
          f"transformers {hf_steps} (every row runs to the batch's longest)")


def bench_serve(args):
    import threading
    import urllib.request
    from machinery import chat
    import serve
    ours, _ = mixed_pair()
    tokenizer = chat.build_byte_tokenizer(tempfile.mkdtemp())
    server = serve.make_server(ours, tokenizer, port=0, context=512, max_rows=16)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    new = args.new_tokens

    def post(i):  # thinking that never ends ("Wait" forever) until max_tokens: exactly `new` each
        body = {"messages": [{"role": "user", "content": f"Question {i}: think about it."}],
                "num_ignore": 10 ** 6, "max_tokens": new}
        req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
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
    print(f"\nserve.py: 8 requests of {new} tokens each, the 31M model, fp32, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | 8 concurrent clients | 8 requests in turn | concurrent / serial |\n"
          "|---|---|---|---|")
    c, s_ = compare("wall time", concurrent, serial, args.repeats)
    print(f"aggregate tokens/s: concurrent {8 * new / c:.0f}, serial {8 * new / s_:.0f} "
          f"({s_ / c:.2f}x)")
    server.shutdown()


def bench_sweep(args):
    """The demo's evaluation: every held-out question under its 10 budget-forcing settings."""
    from machinery import benchmarks, chat
    from eval import parse_setting
    model_dir = os.path.join(args.demo, "train", "final")
    data = os.path.join(args.demo, "test.jsonl")
    if not os.path.isdir(model_dir):
        raise SystemExit(f"{model_dir}: no demo model; run make demo first")
    model = hf.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = chat.load_tokenizer(model_dir)
    questions = [q["prompt"] for q in benchmarks.load_benchmark("mini", data)]
    names = ["8", "16", "24", "32", "48", "64", "96", "nocap", "wait1", "wait2"]
    settings = [parse_setting(s)[1] for s in names]
    fed = {}

    def run(share):
        stats = {}
        sample.generate(model, tokenizer, questions, settings=settings, max_tokens=512,
                        batch_size=64, share=share, stats=stats, progress=False)
        fed[share] = stats["fed"]
    print(f"\nThe demo's sweep: {len(questions)} held-out questions x {len(names)} settings "
          f"({' '.join(names)}), greedy, fp32, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats}")
    print("| case | shared (forks) | every setting alone | shared / alone |\n|---|---|---|---|")
    compare("wall time", lambda: run(True), lambda: run(False), args.repeats)
    print(f"| tokens fed | {fed[True]:,} | {fed[False]:,} | {fed[True] / fed[False]:.2f}x |")


def bench_plan(args):
    """plan.py's training plan against reality on a CPU: the peak resident memory of two real
    steps (fp32, one process, activation checkpointing, one sequence of --tokens tokens, so the
    AdamW state exists) at Qwen2.5-0.5B's shape, minus the same at a tiny shape (the process's own
    baseline: Python, torch, the tokenizer), against the plan's difference. Random init: nothing
    downloaded."""
    from machinery import chat
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
                record = {"question": "q", "thinking": "x" * (args.tokens - 60), "answer": str(k)}
                f.write(json.dumps(record) + "\n")
        subprocess.run([sys.executable, "train.py", "--model", d, "--init", "random",
                        "--data", os.path.join(d, "data.jsonl"), "--device", "cpu",
                        "--dtype", "float32", "--global-batch", "1", "--epochs", "1",
                        "--activation-checkpointing", "on", "--out", os.path.join(d, "out")],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = train.read_log(os.path.join(d, "out", "log.jsonl"))
        parts = plan.training_plan(cfg, 1, args.tokens, True, train.CE_CHUNK, compute_bytes=4,
                                   cuda=False)
        return max(r["peak_mem_gb"] for r in log), sum(parts.values()) / 2 ** 30

    tiny = M.Config(vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    tiny_measured, tiny_plan = measure(tiny)
    measured, planned = measure(hf.known_shape("Qwen2.5-0.5B"))
    print(f"\ntrain.py's memory plan vs peak RSS, {args.tokens} tokens, fp32, CPU, 2 steps")
    print("| shape | measured peak RSS | plan | plan / measured |\n|---|---|---|---|")
    print(f"| tiny (the process baseline) | {tiny_measured:.2f} GiB | {tiny_plan:.3f} GiB | - |")
    print(f"| Qwen2.5-0.5B, minus the baseline | {measured - tiny_measured:.2f} GiB "
          f"| {planned - tiny_plan:.2f} GiB "
          f"| {(planned - tiny_plan) / (measured - tiny_measured):.2f} |")
    shutil.rmtree(root)


def bench_export(args):
    """train.py with s1's recipe (lr 1e-5, 5 % warm-up, cosine, AdamW 0.9/0.95, wd 1e-4, clip 1, 315
    steps of 16, fp32 master weights) on a small model whose initial weights are bf16, as Qwen2.5's
    are; fp32 compute, since bf16 matmuls crawl on a CPU (Adam's step size hardly depends on it).
    Then count the weights training changed whose bf16 rounding is their initial value again: what
    a bf16 export would erase."""
    from safetensors.torch import load_file
    from machinery import chat
    root = tempfile.mkdtemp(prefix="bench-export-")
    cfg = M.Config(vocab_size=320, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = M.Qwen2(cfg)
    model.init_weights(seed=0)
    start = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # on the bf16 grid
    chat.build_byte_tokenizer(os.path.join(root, "init"))
    hf.save_pretrained(start, os.path.join(root, "init"), cfg=cfg,
                       tokenizer_dir=os.path.join(root, "init"))
    rng = random.Random(0)
    # 1,000 examples: 63 steps of 16 per epoch
    with open(os.path.join(root, "data.jsonl"), "w") as f:
        for _ in range(1000):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            steps = " ".join(f"{a}+{k}={a + k}." for k in range(1, rng.randint(2, 8)))
            f.write(json.dumps({"question": f"What is {a}+{b}?", "thinking": f"{steps} So {a + b}.",
                                "answer": str(a + b)}) + "\n")
    out = os.path.join(root, "run")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--model", os.path.join(root, "init"),
                    "--data", os.path.join(root, "data.jsonl"), "--device", "cpu",
                    "--dtype", "float32", "--out", out],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = load_file(os.path.join(out, "final", "model.safetensors"))
    print(f"\nbf16 export after s1's schedule: {cfg.num_hidden_layers}-layer model, "
          f"hidden {cfg.hidden_size}, 315 steps in {time.perf_counter() - t0:.0f} s")
    print("| weights | changed by training "
          "| of those, rounding to bf16 gives back the initial value "
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
        print(f"| {name} | {changed.float().mean():.1%} of {len(init):,} "
              f"| {erased.sum() / changed.sum():.1%} "
              f"| {(rounded - trained).norm() / (trained - init).norm():.2f} |")
    shutil.rmtree(root)


def bench_retry(args):
    """Not a timing: what rejection sampling's retry pays to prefill its prompt again (engine.py
    keeps no prompt), as a share of the tokens a rejected try feeds: its prompt and the budget + 1
    tokens."""
    from machinery import benchmarks, chat
    tokenizer = chat.load_tokenizer(os.path.join(ROOT, "data", "qwen2.5-tokenizer"))
    print("\nRejection sampling: a retry's prompt, as a share of the retry's tokens "
          "(Qwen2.5's tokenizer, s1's chat template)")
    print("| benchmark | budget | median prompt | longest prompt | median share | longest share |\n"
          "|---|---|---|---|---|---|")
    for name in ("aime24", "math500"):
        texts = [chat.prompt_text(q["prompt"]) + chat.completion_text()
                 for q in benchmarks.load_benchmark(name)]
        lengths = sorted(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
        # the paper's smallest and a middle rejection-sampling budget (§5.4)
        for budget in (3500, 8000):
            share = lambda n: 100 * n / (n + budget + 1)
            median = statistics.median(lengths)
            print(f"| {name} | {budget} | {median:.0f} | {lengths[-1]} | {share(median):.1f} % "
                  f"| {share(lengths[-1]):.1f} % |")


BENCHES = {"forward": bench_forward, "train": bench_train, "decode": bench_decode,
           "grade": bench_grade, "batching": bench_batching, "serve": bench_serve,
           "sweep": bench_sweep, "export": bench_export, "plan": bench_plan, "retry": bench_retry}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*",
                        help=f"benchmarks to run, from {sorted(BENCHES)} (default: all)")
    parser.add_argument("--tokens", type=cli.at_least(16), default=512, help="sequence length")
    parser.add_argument("--repeats", type=cli.at_least(1), default=5,
                        help="timed runs per case (median reported)")
    parser.add_argument("--new-tokens", type=cli.at_least(1), default=128,
                        help="decode, serve: tokens generated per row")
    parser.add_argument("--prompts", type=cli.at_least(1), default=64,
                        help="batching: prompts in the mixed workload")
    parser.add_argument("--slots", type=cli.at_least(1), default=16,
                        help="batching: sequences decoded together")
    parser.add_argument("--demo", default="runs/demo", help="sweep: make demo's output directory")
    args = parser.parse_args(argv)
    for which in args.which or BENCHES:
        if which not in BENCHES:
            parser.error(f"unknown benchmark {which!r}; choose from {sorted(BENCHES)}")
        BENCHES[which](args)


if __name__ == "__main__":
    main()
