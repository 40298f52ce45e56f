"""plan.py: will it fit, and how long will it take, before anything is loaded or rented.

One count of a Qwen2.5's parameters, KV cache and activations, and the two memory plans built on
it:
    training_plan     bytes per GPU of train.py's FSDP2 step, part by part (train.py --dry-run)
    generation_plan   bytes per GPU of engine.py's engine under tensor parallelism, how many
                      full-context rows its KV pool holds, and the data x tensor parallel layout
                      (sample.py / eval.py --dry-run, and --tp's default)
Memory is in GiB, as torch reports a GPU's: an "80 GB" H100 has 85.0e9 bytes, 79.1 GiB.
"""
import os

from machinery import hf_checkpoint as hf
from machinery import parallel

H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 SXM (GPU_PEAKS): what --dry-run plans for
# torchtitan's published 33-39 % for FSDP2 on H100 (make gpu-check measures ours)
ASSUMED_MFU = 0.35
GIB = 1024 ** 3


# Each GPU's peaks, from NVIDIA's datasheets (docs/performance.md: the table and its sources):
# dense bf16 tensor-core TFLOPS (half the "with sparsity" figure the datasheets print) and memory
# bandwidth in GB/s. A GPU is known by the words of its torch.cuda.get_device_name, e.g.
# "NVIDIA H100 80GB HBM3" (the SXM board), "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB"; the first
# row whose words it all holds wins.
GPU_PEAKS = [  # (words in the name, the GPU, bf16 TFLOPS, GB/s)
    (("H100", "NVL"), "H100 NVL", 835, 3900),
    (("H100", "PCIE"), "H100 PCIe", 756, 2000),
    (("H100", "HBM3"), "H100 SXM", 989, 3350),
    (("H100", "SXM5"), "H100 SXM", 989, 3350),
    (("H200", "NVL"), "H200 NVL", 835, 4800),
    (("H200",), "H200 SXM", 989, 4800),
    (("A100", "80GB", "PCIE"), "A100 80GB PCIe", 312, 1935),
    (("A100", "80GB"), "A100 80GB SXM", 312, 2039),
    (("A100", "40GB"), "A100 40GB", 312, 1555),  # SXM and PCIe alike
    (("L40S",), "L40S", 362, 864),
]


def gpu_peak(device_name):
    """dict(gpu, bf16_tflops, memory_gb_s) of the GPU torch calls device_name, or None for one not
    in GPU_PEAKS (whole words only: "NVIDIA GH200 480GB" is not an H200)."""
    words = set(device_name.upper().replace("-", " ").split())
    for needed, gpu, tflops, gb_s in GPU_PEAKS:
        if words.issuperset(needed):
            return dict(gpu=gpu, bf16_tflops=tflops, memory_gb_s=gb_s)
    return None


# ----------------------------------------------------------------------------------------------
# Counts

def block_params(cfg):
    """One transformer block: q and o (hidden x hidden), k and v (hidden x KV heads' width), the
    biases of q, k and v, the MLP's gate, up and down, and two RMSNorms."""
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    return 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * cfg.intermediate_size + 2 * h


def root_params(cfg):
    """What is not in a block: the embedding, the LM head (none of its own when tied), the final
    norm."""
    embeddings = 1 if cfg.tie_word_embeddings else 2
    return cfg.vocab_size * cfg.hidden_size * embeddings + cfg.hidden_size


def num_params(cfg):
    return cfg.num_hidden_layers * block_params(cfg) + root_params(cfg)


def in_units(n):
    """A count as people say it: 32.76B, 0.82M, 4.1K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size or unit == "M" and n >= 1e5:
            return f"{n / size:.2f}{unit}" if n < 100 * size else f"{n / size:.0f}{unit}"
    return str(n)


def matmul_params(cfg):
    """Parameters that take part in matmuls: all but the embedding lookup (the LM head does),
    biases and norms."""
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    block = 2 * h * h + 2 * h * kv + 3 * h * cfg.intermediate_size
    return cfg.num_hidden_layers * block + h * cfg.vocab_size


def train_flops(cfg, seq_len):
    """Forward + backward FLOPs of one sequence: 6 per matmul parameter per token, plus causal
    attention, 6 * layers * hidden * seq_len per token (recomputation is not counted: MFU
    convention)."""
    attention = 6 * cfg.num_hidden_layers * cfg.hidden_size * seq_len ** 2
    return 6 * matmul_params(cfg) * seq_len + attention


def kv_bytes_per_token(cfg, kv_heads, dtype_bytes=2):
    """Keys and values of one token in every layer, for kv_heads heads (a rank's share under tensor
    parallelism)."""
    return 2 * cfg.num_hidden_layers * kv_heads * cfg.head_dim * dtype_bytes


def activation_bytes(cfg, max_tokens, max_rows, tp=1, dtype_bytes=2):
    """Peak memory of one engine forward besides weights and KV: a prefill of up to max(max_tokens,
    8192) tokens (hidden states, q/k/v, the MLP's two intermediate halves and its product, per
    layer, freed layer by layer), or a decode step's gathered keys and values (without a paged
    kernel: every row's slots at most, one layer at a time, with KV heads not repeated: the SDPA
    calls have no mask, so CUDA's flash kernel takes them, never the math kernel, which would
    repeat them to every query head) and sampling: fp32 logits and log-probabilities, and at the
    peak, nucleus's sort (values, int64 order, masks, the scattered result): 9 fp32-sized copies of
    rows x vocab (counted, not measured). In fp32 (dtype_bytes 4, s1's own evaluation dtype) no
    flash kernel runs: the gathered keys and values go to SDPA's math kernel, which repeats them to
    every query head."""
    tokens = max(max_tokens, 8192)
    per_token = (4 * cfg.hidden_size + 2 * cfg.hidden_size // tp
                 + 3 * cfg.intermediate_size // tp) * dtype_bytes
    heads = cfg.num_attention_heads if dtype_bytes == 4 else cfg.num_key_value_heads
    gathered = 2 * max_rows * max_tokens * heads // tp * cfg.head_dim * dtype_bytes
    return max(tokens * per_token, gathered) + 9 * max_rows * cfg.vocab_size * 4


# ----------------------------------------------------------------------------------------------
# Training: train.py's FSDP2 step

def training_plan(cfg, gpus, seq_len, checkpointing, ce_chunk, compute_bytes=2, cuda=True):
    """Bytes per GPU, by part, each at its own peak (so the sum over-estimates a little):
    - sharded fp32 state: params 4 + grads 4 + AdamW m, v 8 = 16 B/param;
    - gathered weights in the compute dtype: the root unit (embedding, LM head, final norm), which
      FSDP2 keeps gathered between forward and backward, plus the current and the prefetched block;
    - unsharded gradients: the LM head's, alive for the whole backward, and two blocks', each with
      an fp32 copy for the reduce-scatter when the compute dtype is narrower;
    - activations: with checkpointing each block keeps its input (hidden) and one block at a time
      is recomputed with about 10 hidden- and 4 intermediate-sized tensors per token; without, all;
    - the LM-head backward of one ce_chunk of positions: fp32 logits, softmax and gradient, plus
      their bf16 forms (measured on CPU: 11.5 B per logit in fp32, python -m tools.bench plan);
    - on CUDA, its context and NCCL's buffers (an estimate, to be measured: make gpu-check)."""
    h, i, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    b = compute_bytes
    root, block = root_params(cfg), block_params(cfg)
    block_inside = seq_len * (10 * h + 4 * i) * b
    fp32_copy = 4 if b < 4 else 0
    narrow_logits = 2 * b if b < 4 else 0  # the bf16 forms of the fp32 logits
    parts = {
        "params+grads+AdamW (fp32, sharded)": 16 * num_params(cfg) / gpus,
        "gathered weights (embedding, LM head, 2 blocks)": b * (root + 2 * block),
        "unsharded grads (LM head, 2 blocks) + fp32 copies": (b + fp32_copy) * (V * h + 2 * block),
        "activations": (L * seq_len * h * b + block_inside) if checkpointing else L * block_inside,
        "LM-head backward, one loss chunk": (12 + narrow_logits) * min(ce_chunk, seq_len) * V,
    }
    if cuda:
        parts["CUDA context + NCCL buffers (estimate)"] = 2 * GIB
    return parts


def print_training_plan(cfg, args, gpus, checkpointing, ce_chunk, lengths=None, steps=None):
    """train.py's plan: memory per GPU at the longest micro-batch, the disk --out needs, and (with
    the data) the time at ASSUMED_MFU. Returns whether it fits."""
    n_params = num_params(cfg)
    cpu = getattr(args, "device", None) == "cpu"  # one process in the machine's memory, not GPUs
    gpus = 1 if cpu else gpus
    # the longest micro-batch decides: a full block when packing or when the data is unknown, else
    # the longest example
    seq_len = args.block_size if args.pack or not lengths else min(args.block_size, max(lengths))
    parts = training_plan(cfg, gpus, seq_len, checkpointing, ce_chunk,
                          compute_bytes=2 if args.dtype == "bfloat16" else 4, cuda=not cpu)
    if cpu:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    else:
        memory_gib = args.gpu_memory_gib
    total, usable = sum(parts.values()), 0.95 * memory_gib * GIB  # 5 %: allocator fragmentation
    print0 = parallel.print0
    where = "one CPU process (--device cpu)" if cpu else f"{gpus} GPUs"
    print0(f"memory per {'process' if cpu else 'GPU'} at {seq_len} tokens per micro-batch "
           f"({'the longest example' if seq_len < args.block_size else '--block-size'}), "
           f"{where}, activation checkpointing {'on' if checkpointing else 'off'}:")
    for name, nbytes in parts.items():
        print0(f"  {name:50s} {nbytes / GIB:8.1f} GiB")
    verdict = "fits" if total <= usable else "does NOT fit"
    print0(f"  {'total':50s} {total / GIB:8.1f} GiB of {memory_gib:.1f} GiB (95 % usable) "
           f"-> {verdict}")
    checkpoint = 12 * n_params  # fp32 weights + AdamW m, v
    final = (4 if args.save_dtype == "float32" else 2) * n_params
    # the kept ones and the one being written
    at_once = args.keep_checkpoints + 1 if args.save_every else 1
    print0(f"disk in --out: {checkpoint / 1e9:.3g} GB per checkpoint (fp32 weights and AdamW "
           f"state), up to {at_once} at once with --keep-checkpoints {args.keep_checkpoints}"
           + ("" if args.save_every else " (--save-every 0: only at --stop-at)")
           + f", final model {final / 1e9:.3g} GB ({args.save_dtype}): "
           f"{(at_once * checkpoint + final) / 1e12:.3g} TB at most")
    if lengths is not None and steps is not None and not cpu:
        flops = args.epochs * sum(train_flops(cfg, n) for n in lengths)
        seconds = flops / (gpus * H100_BF16_TFLOPS * 1e12 * ASSUMED_MFU)
        print0(f"time: {len(steps)} steps, {args.epochs * sum(lengths) / 1e6:.1f}M tokens, "
               f"{flops / 1e18:.1f} EFLOP -> {seconds / 60:.0f} min on {gpus} H100 at "
               f"{ASSUMED_MFU:.0%} MFU ({seconds * gpus / 3600:.1f} GPU-hours)")
    return total <= usable


# ----------------------------------------------------------------------------------------------
# Generation: engine.py under tensor parallelism

def generation_plan(cfg, tp, max_tokens, rows, gpu_gib, dtype_bytes=2):
    """Bytes per GPU: weights (blocks split tp ways; embedding, LM head and norms whole on every
    rank), the CUDA context and NCCL buffers, one forward's activations, and the KV pool that the
    engine makes of 90 % of what is left; and how many full-context rows that pool holds."""
    weights = (cfg.num_hidden_layers * block_params(cfg) / tp + root_params(cfg)) * dtype_bytes
    plan = {"weights": weights,
            "cuda context and NCCL": (1.0 if tp > 1 else 0.5) * 1e9,
            "activations": activation_bytes(cfg, max_tokens, rows, tp, dtype_bytes)}
    per_token = kv_bytes_per_token(cfg, cfg.num_key_value_heads // tp, dtype_bytes)
    left = gpu_gib * GIB - plan["weights"] - plan["cuda context and NCCL"]
    plan["KV pool"] = max(0.0, 0.9 * left - plan["activations"])
    plan["rows that fit"] = int(plan["KV pool"] // (per_token * max_tokens))
    plan["kv per token"] = per_token
    return plan


def tp_degrees(cfg, gpus):
    """The tensor-parallel degrees a layout of gpus can take: those dividing both the GPUs (the
    rest are replicas) and the KV heads (each rank holds whole heads)."""
    return [t for t in range(1, gpus + 1) if gpus % t == 0 and cfg.num_key_value_heads % t == 0]


def smallest_fitting_tp(name, gpus, max_tokens, rows, gpu_gib, dtype_bytes=2):
    """The default --tp: the smallest degree whose plan holds the weights and one full-context row,
    so that the other GPUs are replicas (data parallel, each at full speed); else the largest degree
    (check_fits then says that nothing fits)."""
    cfg = hf.plan_config(name)
    degrees = tp_degrees(cfg, gpus)
    return next((t for t in degrees if generation_plan(cfg, t, max_tokens, rows, gpu_gib,
                                                       dtype_bytes)["rows that fit"] >= 1),
                degrees[-1])


def print_generation_plan(name, gpus, max_tokens, rows, gpu_gib, tp=None):
    """The plan for checkpoint `name` at every tensor-parallel degree a layout of gpus can take,
    then the layout: tp (--tp) or the smallest degree that holds one full-context row, times the
    replicas. Returns that degree (None if nothing fits)."""
    cfg = hf.plan_config(name)
    if tp is not None and gpus % tp:
        raise SystemExit(f"--tp {tp} does not divide --gpus {gpus}")
    if tp is not None and cfg.num_key_value_heads % tp:
        raise SystemExit(f"--tp {tp} does not divide the {cfg.num_key_value_heads} KV heads of "
                         f"--model {name}")
    print(f"Memory plan for {name}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_key_value_heads} KV heads; context {max_tokens:,} tokens, up to {rows} rows; "
          f"{gpu_gib:g} GiB per GPU; bf16")
    print("| tensor parallel | weights | activations | context+NCCL | KV pool | KV per token | "
          f"{max_tokens // 1024}K rows that fit | rows at once |\n"
          "|---|---|---|---|---|---|---|---|")
    fits = {}
    for t in tp_degrees(cfg, gpus):
        p = generation_plan(cfg, t, max_tokens, rows, gpu_gib)
        gb = lambda x: f"{x / GIB:.1f} GiB"
        print(f"| {t} | {gb(p['weights'])} | {gb(p['activations'])} | "
              f"{gb(p['cuda context and NCCL'])} | "
              f"{gb(p['KV pool'])} | {p['kv per token'] / 1e3:.0f} KB | {p['rows that fit']} | "
              f"{min(rows, p['rows that fit'])} |")
        fits[t] = p["rows that fit"]
    chosen = tp or smallest_fitting_tp(name, gpus, max_tokens, rows, gpu_gib)
    if fits[chosen] < 1:
        print(f"Does not fit: {'--tp ' + str(tp) if tp else 'no tensor-parallel degree'} on "
              f"{gpus} GPUs holds the weights and one {max_tokens:,}-token row. Use more GPUs, "
              "larger ones, a larger --tp, or a shorter --max-tokens.")
        return None
    why = f"--tp {tp}" if tp else "the smallest TP whose plan fits"
    print(f"{gpus} GPUs: TP {chosen} x DP {gpus // chosen} ({why}): {gpus // chosen} replica(s) "
          f"of {chosen} GPU(s), each holding {fits[chosen]} full-context rows at once")
    return chosen


def check_fits(name, tp, max_tokens, rows, gpu_gib, dtype_bytes=2):
    """Stop before loading weights if they and one full-context row cannot fit this GPU at tensor
    parallel degree tp."""
    plan = generation_plan(hf.plan_config(name), tp, max_tokens, rows, gpu_gib, dtype_bytes)
    if plan["rows that fit"] < 1:
        raise SystemExit(f"{name} does not fit {tp} GPU(s) (--tp {tp}) with one "
                         f"{max_tokens:,}-token row (weights {plan['weights'] / GIB:.1f} GiB per "
                         "GPU): run under torchrun with more GPUs and a larger --tp (sample.py "
                         "--dry-run shows the plan) or lower --max-tokens")
