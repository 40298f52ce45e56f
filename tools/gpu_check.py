"""python -m tools.gpu_check: what `make gpu-check` runs, the first command on any GPU machine
(under 10 minutes on one H100). Writes report.json and report.md to --report-dir.

    python -m tools.gpu_check --device cuda  # make gpu-check: without a usable GPU it stops in
                                             # one line
    python -m tools.gpu_check --device cpu   # the same paths on tiny shapes (CI runs every line
                                             # of it)

Sections: every attention path's numerics against fp32 (packed training, paged prefill and decode,
each kernel that is installed), the SDPA backend each shape selects, train.py's real step (MFU,
peak memory against plan.py's plan), decode through engine.py against the HBM roofline, and
train.py and tensor-parallel sample.py on 2 GPUs against 1. The report ends with each goal, the
measured value and pass/FAIL. docs/gpu.md has the driver, the CUDA builds and the kernels.
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

import model as M
from machinery import cli, engine, plan
from machinery import hf_checkpoint as hf
import sample
from tools.bench import NO_STOP


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: tools/..
# Qwen2.5's own tokenizer, in the repository: the real vocabulary, offline
TOKENIZER = os.path.join(ROOT, "data", "qwen2.5-tokenizer")
# On a CPU: the same code paths on 2 layers (with Qwen's vocabulary for train.py, which tokenizes
# with it).
TINY = M.Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
# Relative L2 error that is rounding, not a bug: bf16 through 0.5B's 24 layers gives 2-3 % (measured
# on a CPU); a wrong mask or position is O(1). The rows-SDPA path is the baseline the others should
# match.
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
        worst = max(worst, d.abs().max().item())
        num, den = num + d.pow(2).sum().item(), den + r.pow(2).sum().item()
    return worst, (num / den) ** 0.5


@contextlib.contextmanager
def packed_kernel(flash, varlen):
    """model.py's packed attention with only these kernels available (None, None: SDPA per
    document)."""
    saved = M.flash_attn_varlen_func, M.varlen_attn
    M.flash_attn_varlen_func, M.varlen_attn = flash, varlen
    try:
        yield
    finally:
        M.flash_attn_varlen_func, M.varlen_attn = saved


def paged_logits(model, rows, prompt_lens, steps, bs):
    """As engine.Engine runs them: the prompts prefilled into a paged KV cache of `bs`-token blocks
    in one packed forward, then `steps` tokens of each row (the reference's: teacher forcing)
    decoded one per forward. Logits (steps + 1, rows, vocab): the prefill's last, then each decode
    step's; and the kernel that decoded (engine.paged_kernel: None is gather + SDPA)."""
    device, cfg = model.lm_head.weight.device, model.cfg
    need = [-(-(p + steps) // bs) for p in prompt_lens]
    pool = engine.BlockPool(cfg, sum(need), bs, cfg.num_key_value_heads, device,
                            model.lm_head.weight.dtype)
    seqs = [engine.Seq(r[:p], rows=[], blocks=[pool.allocate() for _ in range(n)])
            for r, p, n in zip(rows, prompt_lens, need)]
    out = []
    for _ in range(steps + 1):
        batch = engine.PagedBatch(pool, seqs, device)
        new = torch.tensor([t for s in seqs for t in s.ids[s.cached:]], device=device)
        out.append(model(new.view(batch.positions.shape), cache=batch))
        for s, r in zip(seqs, rows):
            s.cached, s.ids = len(s.ids), r[:len(s.ids) + 1]
    return torch.stack(out), engine.paged_kernel(pool.k, bs)


def check_attention(ref, model, seq, steps):
    """Logits and gradients of every attention path against the fp32 CPU model `ref`, on two
    documents of seq/2 tokens: as two rows (SDPA), packed in one row (the varlen kernels), or
    prefilled and decoded through engine.py's paged KV cache (logits only: inference)."""
    device, cuda, half = model.lm_head.weight.device, model.lm_head.weight.is_cuda, seq // 2
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ref.cfg.vocab_size, (2, half), generator=gen)
    targets = torch.randint(0, ref.cfg.vocab_size, (2 * half,), generator=gen)
    loss = lambda logits: F.cross_entropy(logits.flatten(0, 1).float(), targets.to(logits.device))
    ref_logits = ref(ids)
    loss(ref_logits).backward()
    ref_logits, ref_grads = ref_logits.detach(), [p.grad for p in ref.parameters()]
    # positions restart at 0: 2 documents
    ids, pos = ids.to(device), torch.arange(half, device=device).repeat(2)[None]
    packed = lambda m: m(ids.view(1, -1), position_ids=pos).view(2, half, -1)
    flash, varlen = M.flash_attn_varlen_func, M.varlen_attn
    missing = lambda fn, what: (
        f"skipped: {what} not installed" if fn is None else "skipped: CUDA only" if not cuda
        else None if M.flash_kernels_run(model.lm_head.weight)
        else "skipped: needs compute capability 8.0 or newer")
    paths = [("rows: SDPA", None, (flash, varlen), lambda m: m(ids)),
             ("packed: flash-attn varlen", missing(flash, "flash-attn"), (flash, None), packed),
             ("packed: torch varlen_attn", missing(varlen, "torch.nn.attention.varlen"),
              (None, varlen), packed),
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
        out.append(dict(path=name, logits_max_abs=la, logits_rel=lr, grad_max_abs=ga, grad_rel=gr,
                        ok=max(lr, gr) < tol))
    model.zero_grad(set_to_none=True)
    # unequal: decode must keep the shorter row's padding out
    prompts = [half - steps, half - steps - 3]
    # the reference j tokens after the prompt
    at = lambda j: ref_logits[[0, 1], [p - 1 + j for p in prompts]]
    decoded = torch.stack([at(j) for j in range(1, steps + 1)])
    # the Engine's block size (a paged kernel's, where one runs), and 16-token blocks: gather + SDPA
    has_kernel = engine.paged_kernel(model.lm_head.weight, engine.PAGED_BLOCK)
    engine_bs = engine.PAGED_BLOCK if has_kernel else 16
    for bs in dict.fromkeys([engine_bs, 16]):
        try:
            with torch.no_grad():
                paged, kernel = paged_logits(model, ids.tolist(), prompts, steps, bs)
        except Exception as e:
            out.append(dict(path=f"KV cache: {bs}-token blocks",
                            note=f"error: {type(e).__name__}: {e}", ok=False))
            continue
        for name, ours, theirs in (
                (f"KV cache: paged prefill, {bs}-token blocks", paged[0], at(0)),
                (f"KV cache: paged decode, {kernel or 'gather + SDPA'}", paged[1:], decoded)):
            la, lr = errors(ours, theirs)
            out.append(dict(path=name, logits_max_abs=la, logits_rel=lr, ok=lr < tol))
    return dict(tokens=seq, tolerance=tol, paths=out)


def check_sdpa(cfg, device, dtype, seq, train_seq):
    """Which SDPA kernel each of the model's SDPA calls selects at its shape: the aten op the
    profiler records (aten::_scaled_dot_product_flash_attention, _efficient_attention,
    _cudnn_attention or _attention_math; cuDNN's may win over flash on an H100 with cuDNN >= 9.15),
    and on CUDA whether the call runs with only the flash and efficient kernels allowed (never the
    math kernel, which copies K and V to every query head). The decode calls are engine.py's
    fallback (no paged kernel): one query per row over its gathered keys, no mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    # laid out as model.py and engine.py call it: (B, T, H, D) transposed
    def call(batch, q_len, kv_len, causal):
        q = torch.randn(batch, q_len, H, D, device=device, dtype=dtype).transpose(1, 2)
        k, v = (torch.randn(batch, kv_len, KV, D, device=device, dtype=dtype).transpose(1, 2)
                for _ in range(2))
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    out = []
    shapes = ((f"train, unpacked row: 1 x {train_seq:,}, causal",
               call(1, train_seq, train_seq, True)),
              (f"rows/prefill: 1 x {seq:,}, causal", call(1, seq, seq, True)),
              (f"decode fallback: 1 row, {seq:,} cached", call(1, 1, seq, False)),
              (f"decode fallback: 64 rows of one length, {seq:,} cached", call(64, 1, seq, False)))
    for name, fn in shapes:
        # the op's name is the kernel SDPA chose
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        selected = {e.name for e in prof.events()
                    if e.name.startswith("aten::_scaled_dot_product")}
        entry = dict(shape=name, selected=sorted(selected))
        if device.type == "cuda":
            try:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                    fn()
                entry["flash_or_efficient"] = True
            except RuntimeError as e:
                entry["flash_or_efficient"], entry["note"] = False, str(e).splitlines()[0][:200]
        out.append(entry)
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
    cmd = launcher + ["train.py", "--model", model_dir, "--init", "random",
                      "--tokenizer", TOKENIZER, "--data", data, "--out", out, "--epochs", "1",
                      "--global-batch", str(batch), "--block-size", str(block), "--pack",
                      "--activation-checkpointing", "on", "--device", device, "--dtype", dtype,
                      "--save-dtype", "bfloat16"]
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
        # each step: one full row
        data = digit_data(os.path.join(tmp, f"{name}.jsonl"), [block + 100] * steps)
        log = run_train([sys.executable], write_config(cfg, os.path.join(tmp, name)), data,
                        os.path.join(tmp, f"run-{name}"), device.type, dtype, block, 1)
        parts = plan.training_plan(cfg, 1, block, True, train.CE_CHUNK)
        # the log's peak is torch.cuda.max_memory_allocated: it cannot see the CUDA context and
        # NCCL buffers
        planned = sum(v for k, v in parts.items() if "context" not in k) / 2 ** 30
        timed, peak = log[1:] or log, max(r["peak_mem_gb"] for r in log)
        out.append(dict(shape=name, tokens=block, steps=len(log),
                        tokens_per_s=statistics.median(r["tokens_per_s"] for r in timed),
                        # None on a CPU, and on a GPU of unknown peak
                        mfu=statistics.median(r["mfu"] for r in timed) if log[0].get("mfu")
                        else None,
                        # on a CPU peak is resident memory: no comparison
                        peak_mem_gib=peak, planned_mem_gib=planned,
                        plan_error=planned / peak - 1 if device.type == "cuda" else None))
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


def decode_seconds(model, prompts, new):
    """Seconds of the decode steps alone of `new` tokens after each prompt, all prompts at once
    through engine.Engine. The engine is built (its KV pool: about 55 GB zero-filled for 7B on an
    H100) and every prompt prefilled, in the first step, which draws each row's first token, before
    the clock starts; then `new` steps are timed, each feeding one token of every row through the
    model (the first drawn token to the last)."""
    runner = engine.Engine(model, len(prompts[0]) + new, max_rows=len(prompts))
    for prompt in prompts:
        runner.add(prompt, [sample.Row(prompt_len=len(prompt), max_len=len(prompt) + new,
                                       special=NO_STOP, ignores_left=0, phase="answer")])
    runner.step()
    assert not runner.waiting, "every prompt is prefilled in the first step"
    cuda = model.lm_head.weight.is_cuda
    torch.cuda.synchronize() if cuda else None
    t0 = time.perf_counter()
    while runner.busy():
        runner.step()
    torch.cuda.synchronize() if cuda else None
    seconds = time.perf_counter() - t0
    assert runner.steps == 1 + new, "the prefill, then one step per token fed"
    return seconds


@torch.no_grad()
def check_decode(model, new, repeats, peak=None):
    """Greedy decode tokens/s through engine.Engine at batch 1 and 64: tokens fed per second by
    the decode steps alone (decode_seconds). At batch 1 a step reads every weight and the KV cache
    once, so bytes per token / time against the GPU's memory bandwidth (peak: plan.gpu_peak; None,
    unknown) is the roofline; the embedding table is not counted unless it is also the LM head (a
    step reads one token's vector of it). The shape must make a step bandwidth-bound: 7B on an
    H100 (1.5B's 3 GB read in about 1 ms would measure kernel launches, not bandwidth, without
    CUDA graphs)."""
    cfg, device, dtype = model.cfg, model.lm_head.weight.device, model.lm_head.weight.dtype
    out = {}
    for batch in (1, 64):
        prompts = torch.randint(0, cfg.vocab_size, (batch, 16),
                                generator=torch.Generator().manual_seed(0)).tolist()
        decode_seconds(model, prompts, new)  # warm-up
        median = statistics.median(decode_seconds(model, prompts, new) for _ in range(repeats))
        out[f"batch_{batch}_tokens_per_s"] = batch * new / median
    read = lambda name: cfg.tie_word_embeddings or name != "model.embed_tokens.weight"
    weights = sum(p.numel() * p.element_size()
                  for name, p in model.named_parameters() if read(name))
    kv_per_token = plan.kv_bytes_per_token(cfg, cfg.num_key_value_heads, dtype.itemsize)
    # at the timed steps' mean context: step j feeds token j and attends over 16 + j keys
    per_token = weights + kv_per_token * (16 + (new + 1) / 2)
    bandwidth = peak and peak["memory_gb_s"] * 1e9
    achieved = per_token * out["batch_1_tokens_per_s"]
    kernel = engine.paged_kernel(model.lm_head.weight, engine.PAGED_BLOCK) or "gather + SDPA"
    return dict(out, shape=f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}",
                kernel=kernel, new_tokens=new, bytes_per_token=per_token,
                achieved_gb_s=achieved / 1e9, memory_gb_s=peak and peak["memory_gb_s"],
                roofline_fraction=bandwidth and achieved / bandwidth,
                note=None if peak else "peak unknown: no memory bandwidth for this device")


def check_two_gpus(tmp, cfg, device="cuda"):
    """train.py's losses on 2 GPUs vs 1, and tensor-parallel greedy tokens vs 1 GPU (device="cpu":
    the same on 2 gloo processes, to try this function without GPUs)."""
    if device == "cuda" and torch.cuda.device_count() < 2:
        return dict(skipped=f"needs 2 GPUs, {torch.cuda.device_count()} visible")
    dtype = "bfloat16" if device == "cuda" else "float32"
    path = lambda name: os.path.join(tmp, name)
    launchers = {1: [sys.executable],
                 2: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc-per-node", "2"]}
    data = digit_data(path("two.jsonl"), [random.Random(i).randint(300, 2000) for i in range(8)])
    losses = {w: [r["loss"] for r in run_train(launcher, write_config(cfg, path("two")), data,
                                               path(f"two-{w}"), device, dtype, 2048, 4)]
              for w, launcher in launchers.items()}
    init = M.Qwen2(cfg)
    init.init_weights(seed=0)
    hf.save_pretrained({k: v.to(getattr(torch, dtype)) for k, v in init.state_dict().items()},
                       path("ckpt"), cfg=cfg, tokenizer_dir=TOKENIZER)
    with open(path("q.jsonl"), "w") as f:
        f.writelines(json.dumps({"question": f"What is {i} + {i}?"}) + "\n" for i in range(4))
    texts = {}
    for w, launcher in launchers.items():
        subprocess.run(launcher + ["sample.py", "--model", path("ckpt"), "--input", path("q.jsonl"),
                                   "--output", path(f"tp{w}.jsonl"), "--max-tokens", "256",
                                   "--max-thinking-tokens", "128", "--dtype", dtype,
                                   "--device", device],
                       cwd=ROOT, check=True, capture_output=True)
        with open(path(f"tp{w}.jsonl")) as f:
            texts[w] = [json.loads(line)["text"] for line in f]
    # bf16 sums in another order may flip a near-tie
    same = sum(a == b for a, b in zip(texts[1], texts[2]))
    return dict(train_losses_1_gpu=losses[1], train_losses_2_gpus=losses[2],
                tp_identical_rows=f"{same}/{len(texts[1])}",
                train_max_loss_diff=max(abs(a - b) for a, b in zip(losses[1], losses[2])))


def goals(r):
    """The targets, each with what this run measured and pass / FAIL (not measured: e.g. on a
    CPU)."""
    train = {x["shape"]: x for x in r["train"]} if isinstance(r["train"], list) else {}
    mfu = train.get("1.5B", {}).get("mfu")
    plan_error = max((abs(x["plan_error"]) for x in train.values() if x["plan_error"] is not None),
                     default=None)
    roofline = r["decode"].get("roofline_fraction")
    fused = ([x["flash_or_efficient"] for x in r["sdpa_kernels"] if "flash_or_efficient" in x]
             if isinstance(r["sdpa_kernels"], list) else [])
    judge = lambda goal, measured, met: dict(
        goal=goal, measured=measured,
        result="not measured" if measured is None else "pass" if met else "FAIL")
    return [judge("train MFU >= 0.40 at 1.5B, 16K tokens", mfu, mfu is not None and mfu >= 0.40),
            judge("memory plan within 0.10 of the measured peak", plan_error,
                  plan_error is not None and plan_error <= 0.10),
            judge("decode at batch 1 >= 0.60 of the HBM roofline (7B)", roofline,
                  roofline is not None and roofline >= 0.60),
            judge("every SDPA call runs with only flash/efficient allowed (never math)",
                  f"{sum(fused)}/{len(fused)}" if fused else None, all(fused))]


TABLES = [("attention",
           "Attention vs fp32 CPU: {tokens} tokens, ok below {tolerance} relative L2 error",
           ["path", "logits_max_abs", "logits_rel", "grad_max_abs", "grad_rel", "ok", "note"]),
          ("sdpa_kernels", "SDPA kernel per shape",
           ["shape", "selected", "flash_or_efficient", "note"]),
          ("train", "train.py step: FSDP2 on one device, packed, activation checkpointing",
           ["shape", "tokens", "steps", "tokens_per_s", "mfu", "peak_mem_gib", "planned_mem_gib",
            "plan_error"]),
          ("decode",
           "Decode through engine.Engine, greedy, {new_tokens} new tokens after 16 (the decode "
           "steps timed), {shape}, {kernel}",
           ["batch_1_tokens_per_s", "batch_64_tokens_per_s", "achieved_gb_s", "memory_gb_s",
            "roofline_fraction", "note"]),
          ("two_gpus", "Two GPUs",
           ["train_losses_1_gpu", "train_losses_2_gpus", "train_max_loss_diff",
            "tp_identical_rows"]),
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
    peak = report.get("peak")
    lines = [f"# gpu-check: {report['device']}, torch {report['torch']} "
             f"(CUDA {report.get('cuda')}, cuDNN {report.get('cudnn')}), {report['mode']}", "",
             f"Peak: {peak['gpu']}, {peak['bf16_tflops']} TFLOPS dense bf16, "
             f"{peak['memory_gb_s']:,} GB/s (NVIDIA's datasheets: docs/performance.md)" if peak
             else f"Peak unknown for {report['device']}: MFU and the roofline fraction are not "
                  "reported (machinery/plan.py's GPU_PEAKS lists the GPUs it knows)"]
    for name, title, keys in TABLES:
        part = report[name]
        if isinstance(part, dict) and ("error" in part or "skipped" in part):
            why = next(f"{k}: {part[k]}" for k in ("error", "skipped") if k in part)
            lines += ["", f"## {title.split(':')[0]}", "", why]
            continue
        entries = (part["paths"] if name == "attention"
                   else part if isinstance(part, list) else [part])
        lines += ["", f"## {title.format(**part) if isinstance(part, dict) else title}", "",
                  f"| {' | '.join(keys)} |", "|" + "---|" * len(keys)]
        lines += [f"| {' | '.join(cell(entry.get(k)) for k in keys)} |" for entry in entries]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    # A GPU check never quietly runs on a CPU: without a usable GPU it stops in one line
    # (cli.device). Only an explicit --device cpu runs the tiny CPU shapes (CI's run of every line
    # of this check).
    device = cli.device("cpu" if args.device == "cpu" else "cuda")
    gpu, dtype = device.type == "cuda", torch.bfloat16
    # full shapes on a GPU; on a CPU the same paths on tiny ones, so that CI runs every line
    if gpu:
        cfg, seq, steps, block, new = hf.known_shape("Qwen2.5-0.5B"), 2048, 16, 16384, 256
        shapes = {s: hf.known_shape(f"Qwen2.5-{s}") for s in ("0.5B", "1.5B")}
    else:
        cfg, seq, steps, block, new = TINY, 128, 8, 256, 16
        shapes = {"tiny": dataclasses.replace(TINY, vocab_size=151936)}
    ref = M.Qwen2(cfg)  # fp32 on the CPU: the reference
    ref.init_weights(seed=0)
    model = copy.deepcopy(ref).to(device, dtype)
    tmp = tempfile.mkdtemp(prefix="gpu-check-")
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    peak = plan.gpu_peak(name)  # None: MFU and the roofline fraction are not reported
    report = dict(device=name, peak=peak, torch=torch.__version__, cuda=torch.version.cuda,
                  cudnn=torch.backends.cudnn.version() if gpu else None,
                  mode="Qwen2.5 shapes" if gpu
                  else "CPU: tiny shapes, GPU-only numbers not measured")
    # train: fp32 on a CPU, which train.py's CPU runs use (bf16 matmuls crawl there)
    train_dtype, train_steps = ("bfloat16", 4) if gpu else ("float32", 2)
    decode_model = lambda: random_model(hf.known_shape("Qwen2.5-7B"), device, dtype) if gpu else ref
    sections = dict(
        attention=lambda: check_attention(ref, model, seq, steps),
        sdpa_kernels=lambda: check_sdpa(cfg, device, dtype, seq, 20480 if gpu else 2 * seq),
        train=lambda: check_train(tmp, shapes, device, train_dtype, block, train_steps),
        decode=lambda: check_decode(decode_model(), new, 3 if gpu else 1, peak),
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="cuda (auto means cuda: a GPU check never falls back to a CPU) "
                        "or cpu (tiny shapes)")
    p.add_argument("--report-dir", default="runs/gpu-check",
                   help="where report.json and report.md go")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli.main(main)
