"""train.py: s1's supervised fine-tuning, in raw PyTorch with FSDP2.
Start reading at main(): the loop and its loss normalisation are there, inline; schedule() says
which micro-batches each rank runs at each step.

The defaults are s1.1's run as s1's files state it (the recipe of s1's train/sft.sh; the block size
from s1's README prose only, "to avoid OOM": the sft.sh line it links, l. 17, says 32768, and
sft.sh trains on s1K): full fine-tune of Qwen2.5-32B-Instruct on s1K-1.1 (DeepSeek-R1 traces),
sequences cut at 20,000 tokens, 5 epochs at global batch 16 (315 steps) in s1's data order, lr 1e-5
with 5 % warm-up then cosine to 0, AdamW(0.9, 0.95, wd 1e-4), bf16 compute on fp32 master weights,
saved in fp32 as s1's trainer.save_model did. The paper's s1 run is the same on s1K (Gemini traces)
at 32,768 tokens, 26 minutes on 16 H100s.

    # s1.1 on 2 nodes of 8 GPUs, then the paper's s1 (--out: storage both nodes mount)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        train.py --out /shared/runs/s1.1
    torchrun ... train.py --data simplescaling/s1K --block-size 32768 --out /shared/runs/s1
    python train.py --dry-run --gpus 8                      # will it fit, how long, before renting
    python train.py --model tiny/ --data my.jsonl --device cpu --dtype float32          # a laptop

Every optimizer step sees --global-batch sequences. They are dealt to the ranks balanced by
length; each rank runs one micro-batch per micro-step (one sequence, or with --pack several whole
sequences) and accumulates gradients until its share is done, so the same recipe runs on 1 CPU
process or 16 GPUs and gives the same updates.
"""
import argparse
import datetime
import json
import math
import os
import resource
import shutil
import socket
import time

# Before torch touches CUDA: grow memory segments instead of fragmenting them (variable-length
# micro-batches leave holes a fixed-size segment cannot reuse). The user's own setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from tqdm import tqdm

import model as qwen
from machinery import chat, cli, jsonl, parallel, plan
from machinery import hf_checkpoint as hf
from machinery.parallel import is_main, print0

# ----------------------------------------------------------------------------------------------
# The recipe: s1.1's run. From s1's train/sft.sh (l. 4-8, 16-38) unless the line says otherwise;
# "HF Trainer" is transformers 4.46.1's, which s1 ran.

MODEL = "Qwen/Qwen2.5-32B-Instruct"  # sft.sh: the base model, fully fine-tuned
DATA = "simplescaling/s1K-1.1"  # s1.1: s1K's questions with DeepSeek-R1 traces (s1's README)
EPOCHS = 5  # sft.sh
GLOBAL_BATCH = 16  # sequences per optimizer step: batch 1 per GPU on 16 GPUs (sft.sh)
BLOCK_SIZE = 20000  # s1.1's, from s1's README prose ("to avoid OOM"); s1: 32768, sft.sh l. 17
LR = 1e-5  # sft.sh: the peak, then cosine to 0
WARMUP_RATIO = 0.05  # sft.sh: linear warm-up over 5 % of the steps
WEIGHT_DECAY = 1e-4  # sft.sh
BETAS = (0.9, 0.95)  # sft.sh: AdamW's beta1, beta2
ADAM_EPS = 1e-8  # HF Trainer's default adam_epsilon
GRAD_CLIP = 1.0  # HF Trainer's default max_grad_norm
SEED = 42  # HF Trainer's default: shuffling (s1's data order) and random init
DTYPE = "bfloat16"  # sft.sh --bf16: bf16 compute on fp32 master weights
SAVE_DTYPE = "float32"  # s1's sft.py loads fp32 and trainer.save_model writes what it holds
LOSS_NORM = "sequence"  # HF Trainer at batch 1 per GPU: each sequence's mean, then their mean
GPUS = 16  # s1's 16 H100s (26 minutes): what --dry-run plans for

# Ours, not s1's: positions per LM-head/loss chunk. 2048 x 152K fp32 logits is 1.2 GB; a whole
# 20K-token micro-batch at once would be 12 GB.
CE_CHUNK = 2048

# What a resumed run must share with the run it continues (train_config.json), unless
# --allow-config-change.
RESUME_KEYS = ("model", "init", "data", "epochs", "global_batch", "block_size", "lr",
               "warmup_ratio", "weight_decay", "betas", "grad_clip", "loss_norm", "pack", "dtype",
               "seed", "steps")


# ----------------------------------------------------------------------------------------------
# The run

def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:  # no device, no weights, no process group
        return dry_run(args)
    # First: a GPU node whose torch cannot use the GPU stops here, in one line.
    device = cli.device(args.device)
    if device.type == "cpu" and args.device == "auto" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise SystemExit(f"torchrun started {os.environ['WORLD_SIZE']} processes but this machine "
                         "has no CUDA: they would train on CPU over gloo. Pass --device cpu if "
                         "that is what you want")
    # Every rank reads the config and the tokenizer; the weights are rank 0's alone, fetched once
    # the process group is up and --out is checked (fetch_weights).
    path = hf.checkpoint_dir(args.model, hf.METADATA_FILES)
    cfg = hf.read_config(os.path.join(path, "config.json"))
    n_params = plan.num_params(cfg)
    checkpointing = use_checkpointing(args.activation_checkpointing, n_params)

    device, world, rank = parallel.init_distributed(device, args.dist_timeout_min, always=True)
    torch.manual_seed(args.seed)
    check_out_dir(args.out, args.resume, needs_shared_out(args))
    if args.init != "random":
        path = fetch_weights(args.model, path, args.download_timeout_min)
    tokenizer = chat.load_tokenizer(args.tokenizer or path)
    triples = to_triples(jsonl.local_or_hub(args.data, flag="--data"), args.data)
    examples, cut = tokenize(triples, tokenizer, args.block_size)
    lengths = [len(ids) for ids, _ in examples]
    loss_tokens = [sum(t != qwen.IGNORE for t in labels) for _, labels in examples]
    steps = schedule(lengths, args.global_batch, world, args.epochs, args.seed, args.pack,
                     args.block_size)

    print0(json.dumps(vars(args), indent=1))
    print0(f"world {world} on {device.type}; {cfg.num_hidden_layers} layers, {n_params:,} "
           f"parameters ({plan.in_units(n_params)}); "
           f"activation checkpointing {'on' if checkpointing else 'off'}")
    print0(f"data: {len(examples)} examples, {sum(lengths):,} tokens, {sum(loss_tokens):,} loss "
           f"tokens, longest {max(lengths)}, {cut} cut at {args.block_size}; {len(steps)} steps, "
           f"{len(steps[0][0])} micro-steps per rank at step 1")
    if device.type == "cuda":  # the plan against what this GPU really has
        args.gpu_memory_gib = torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
        plan.print_training_plan(cfg, args, world, checkpointing, CE_CHUNK, lengths, steps)
    config = dict(vars(args), betas=list(args.betas), world=world, n_params=n_params,
                  steps=len(steps))
    config_path = os.path.join(args.out, "train_config.json")
    if args.resume and not args.allow_config_change:  # every rank reads the same file: all stop
        jsonl.same_config(config_path, {k: config[k] for k in RESUME_KEYS},
                          "resume with the same flags, or add --allow-config-change to continue "
                          "with the new config")
    if is_main():
        jsonl.write_atomic(config_path, json.dumps(config, indent=1) + "\n")

    model = build_model(args, cfg, path, device, checkpointing, world)
    opt = make_optimizer(model, args, device)
    start = load_latest_checkpoint(model, opt, args.out) if args.resume else 0
    end = min(len(steps), args.stop_at) if args.stop_at else len(steps)
    log = open_log(os.path.join(args.out, "log.jsonl"), args.resume) if is_main() else None
    bar = tqdm(total=len(steps), initial=start, desc="train", disable=not is_main(),
               dynamic_ncols=True)

    for step in range(start, end):
        t0 = time.perf_counter()
        lr = lr_at(step, len(steps), args.lr, args.warmup_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        in_step = [i for per_rank in steps[step] for micro_batch in per_rank for i in micro_batch]
        step_loss_tokens = sum(loss_tokens[i] for i in in_step)
        local_loss, local_tokens = torch.zeros((), dtype=torch.float64), 0
        for micro_batch in steps[step][rank]:
            ids, labels, pos, doc = make_micro_batch(examples, micro_batch, device)
            losses = model(ids, position_ids=pos if args.pack else None, labels=labels,
                           ce_chunk=CE_CHUNK)[0]
            if not micro_batch:
                loss = losses.sum()  # zero, but runs the collectives other ranks are waiting for
            elif args.loss_norm == "sequence":  # each sequence's mean, averaged over the batch
                # clamp: a question over --block-size leaves no loss tokens; it adds 0, not NaN
                counts = torch.tensor([max(loss_tokens[i], 1) for i in micro_batch], device=device,
                                      dtype=torch.float32)
                sums = torch.zeros(len(micro_batch), device=device).index_add(0, doc, losses)
                loss = (sums / counts).sum() / len(in_step)
            else:
                loss = losses.sum() / step_loss_tokens
            loss.backward()
            local_loss += loss.detach().double().cpu()
            local_tokens += len(ids[0])
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   args.grad_clip).full_tensor().item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        totals = torch.tensor([local_loss.item(), local_tokens], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        dt = time.perf_counter() - t0
        record = dict(step=step + 1, loss=totals[0].item(), lr=lr, grad_norm=grad_norm,
                      loss_tokens=step_loss_tokens, tokens=int(totals[1].item()),
                      tokens_per_s=totals[1].item() / dt, seconds=dt)
        record.update(usage(device, cfg, [lengths[i] for i in in_step], dt, world))
        if is_main():
            jsonl.write_line(log, record)
            bar.update(1)
            bar.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in record.items()))
        if step == start and args.probe_longest:
            probe_longest(model, examples, steps, device, args.pack)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < len(steps):
            save_checkpoint(model, opt, step + 1, args.out, args.keep_checkpoints)
    bar.close()

    if end < len(steps):  # stopped early on purpose: leave a checkpoint to resume from
        if not (args.save_every and end % args.save_every == 0):
            save_checkpoint(model, opt, end, args.out, args.keep_checkpoints)
    else:
        save_final_model(model, args, cfg, path)
    dist.barrier()


def dry_run(args):
    """--dry-run: the memory plan, before anything is loaded or rented; returns whether it fits.
    Without the data (or its tokenizer), memory is planned for full --block-size micro-batches and
    the time is not estimated."""
    try:
        cfg = hf.plan_config(args.model)
    except FileNotFoundError as e:
        raise SystemExit(f"--model {e}")
    n_params = plan.num_params(cfg)
    checkpointing = use_checkpointing(args.activation_checkpointing, n_params)
    print0(f"{args.model}: {n_params:,} parameters ({plan.in_units(n_params)})")
    lengths = steps = None
    try:
        triples = to_triples(jsonl.local_or_hub(args.data, flag="--data"), args.data)
        tokenizer = chat.load_tokenizer(args.tokenizer or args.model)
        examples, _ = tokenize(triples, tokenizer, args.block_size)
        lengths = [len(ids) for ids, _ in examples]
        steps = schedule(lengths, args.global_batch, args.gpus, args.epochs, args.seed, args.pack,
                         args.block_size)
    except (SystemExit, FileNotFoundError) as e:
        print0(f"(no time estimate: {e})")
    return plan.print_training_plan(cfg, args, args.gpus, checkpointing, CE_CHUNK, lengths, steps)


# ----------------------------------------------------------------------------------------------
# Data: records -> (question, thinking, answer) -> token ids, labels

COLUMNS = {
    "question": ["question"],
    "thinking": ["thinking", "deepseek_thinking_trajectory", "thinking_trajectories",
                 "gemini_thinking_trajectory"],
    "answer": ["answer", "deepseek_attempt", "attempt", "gemini_attempt"],
}


def to_triples(records, source):
    """(question, thinking, answer) per record, with the column names resolved once for the file."""
    if not records:
        raise SystemExit(f"{source}: no records")
    names = {}
    for field, candidates in COLUMNS.items():
        found = [c for c in candidates if c in records[0]]
        if not found:
            raise SystemExit(f"{source}: no {field} column; found {sorted(records[0])}, "
                             f"accepted {candidates}")
        names[field] = found[0]
    triples = []
    for i, record in enumerate(records):
        values = []
        for field, column in names.items():
            value = record.get(column)
            if isinstance(value, list):  # s1K stores thinking_trajectories as a list of one string
                value = "\n".join(value)
            if not isinstance(value, str) or not value.strip():
                raise SystemExit(f"{source} record {i}: {field} ({column!r}) is missing or empty")
            values.append(value)
        triples.append(tuple(values))
    return triples


def tokenize(triples, tokenizer, block_size):
    """(ids, labels) per example. labels[t] is the target of position t: the next token where the
    chat format marks it for loss, else IGNORE; sequences over block_size are cut on the right."""
    examples, cut = [], 0
    for question, thinking, answer in tqdm(triples, desc="tokenize", disable=not is_main(),
                                           leave=False):
        ids, mask = chat.render(tokenizer, question, thinking, answer)
        cut += len(ids) > block_size
        ids, mask = ids[:block_size], mask[:block_size]
        labels = [t if m else qwen.IGNORE for t, m in zip(ids[1:], mask[1:])] + [qwen.IGNORE]
        examples.append((ids, labels))
    return examples, cut


# ----------------------------------------------------------------------------------------------
# The schedule: which micro-batches each rank runs at each step. A pure function of the seed and
# the lengths, identical on every rank, so the step number is the whole data cursor for --resume.

def schedule(lengths, global_batch, world, epochs, seed, pack, block_size):
    n = len(lengths)
    steps_per_epoch = math.ceil(n / global_batch)
    steps = []
    for epoch in range(epochs):
        # s1's order: HF Trainer (transformers 4.46.1) seeds torch with 42 (trainer.py l. 425) and
        # hands a RandomSampler to accelerate 1.0.1, whose SeedableRandomSampler reseeds a generator
        # with initial_seed + epoch each epoch (data_loader.py l. 84-94): one randperm per epoch,
        # as here.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        # accelerate's BatchSamplerShard deals batch k to rank k % world and fills the last step
        # from the epoch's first indices (l. 209-254): 1,000 examples on 16 GPUs give 63 steps of
        # 16, 315 in all.
        order = (order * 2)[:steps_per_epoch * global_batch]
        for s in range(steps_per_epoch):
            batch = sorted(order[s * global_batch:(s + 1) * global_batch],
                           key=lambda i: -lengths[i])
            per_rank, tokens = [[] for _ in range(world)], [0] * world
            # unpacked, every rank runs the same number of sequences
            cap = global_batch if pack else math.ceil(global_batch / world)
            for i in batch:  # longest first, each to the least-loaded rank: ranks finish together
                r = min((r for r in range(world) if len(per_rank[r]) < cap),
                        key=lambda r: tokens[r])
                per_rank[r].append(i)
                tokens[r] += lengths[i]
            micro_batches = [pack_sequences(ex, lengths, block_size) if pack else [[i] for i in ex]
                             for ex in per_rank]
            n_micro = max(len(m) for m in micro_batches)
            # [] = an idle micro-batch: it keeps the collectives in step
            steps.append([m + [[]] * (n_micro - len(m)) for m in micro_batches])
    return steps


def pack_sequences(indices, lengths, block_size):
    """First-fit decreasing: whole sequences into as few micro-batches of block_size tokens as
    fit."""
    micro_batches, room = [], []
    for i in sorted(indices, key=lambda i: -lengths[i]):
        j = next((j for j, free in enumerate(room) if free >= lengths[i]), None)
        if j is None:
            micro_batches.append([]), room.append(block_size)
            j = len(micro_batches) - 1
        micro_batches[j].append(i)
        room[j] -= lengths[i]
    return micro_batches


def make_micro_batch(examples, micro_batch, device):
    """The tensors of one micro-batch (a list of example indices): input ids, labels, positions
    (restarting per document) and the document of each position."""
    if not micro_batch:  # an idle micro-batch: one token, no loss
        zero = torch.zeros(1, 1, dtype=torch.long, device=device)
        return zero, torch.full_like(zero, qwen.IGNORE), zero, zero[0]
    ids = [t for i in micro_batch for t in examples[i][0]]
    labels = [t for i in micro_batch for t in examples[i][1]]
    pos = [p for i in micro_batch for p in range(len(examples[i][0]))]
    doc = [d for d, i in enumerate(micro_batch) for _ in examples[i][0]]
    as_batch = lambda xs: torch.tensor([xs], dtype=torch.long, device=device)  # a batch of one
    return as_batch(ids), as_batch(labels), as_batch(pos), as_batch(doc)[0]


def probe_longest(model, examples, steps, device, pack):
    """Forward and backward on the longest micro-batch of the run, on every rank, the gradient then
    dropped: a micro-batch too long for memory fails in the first minutes, not at step 200. It runs
    after the first optimizer step, when AdamW's state exists as at every later step, and changes no
    weight, no optimizer state and no step of the schedule, so the data order stays s1's."""
    micro_batches = [m for step in steps for per_rank in step for m in per_rank]
    longest = max(micro_batches, key=lambda m: sum(len(examples[i][0]) for i in m))
    ids, labels, pos, doc = make_micro_batch(examples, longest, device)
    t0 = time.perf_counter()
    losses = model(ids, position_ids=pos if pack else None, labels=labels, ce_chunk=CE_CHUNK)[0]
    losses.sum().backward()
    model.zero_grad(set_to_none=True)
    peak = (f", peak {torch.cuda.max_memory_allocated() / 1024 ** 3:.1f} GiB"
            if device.type == "cuda" else "")
    print0(f"probe: the longest micro-batch, example{'s' * (len(longest) > 1)} "
           f"{', '.join(map(str, longest))} ({len(ids[0])} tokens): forward and backward on every "
           f"rank in {time.perf_counter() - t0:.1f} s{peak}; gradient dropped")


# ----------------------------------------------------------------------------------------------
# Learning rate: transformers' get_cosine_schedule_with_warmup, which s1's HF Trainer used

def lr_at(step, total, peak, warmup_ratio):
    warmup = math.ceil(total * warmup_ratio)
    if step < warmup:
        return peak * step / max(1, warmup)  # note: step 0 trains at lr 0, as in HF
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------
# The run's directory

def needs_shared_out(args):
    """Whether ranks read back in --out what other ranks wrote, so that on several nodes it must be
    on a filesystem they all mount. A checkpoint does: DCP writes each rank's shards there, rank 0
    writes its metadata and renames it when whole, and --resume reads shards and
    train_config.json on every rank; --save-every, --stop-at and --resume make or read one.
    Without them nothing written is read by another rank: the final model is gathered over the
    network and written by rank 0 alone, as are the log and train_config.json."""
    return bool(args.save_every or args.stop_at or args.resume)


def check_out_dir(out, resume, needs_shared):
    """Before any work: whether every rank sees what rank 0 writes in --out (refused where the run
    needs that: needs_shared_out), and that --out holds no other run unless --resume."""
    os.makedirs(out, exist_ok=True)
    token = parallel.broadcast(f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}")
    path = os.path.join(out, ".shared")
    if is_main():
        with open(path, "w") as f:
            f.write(token)
    dist.barrier()
    try:
        with open(path) as f:
            seen = f.read() == token
    except OSError:
        seen = False
    blind = [None] * dist.get_world_size()
    dist.all_gather_object(blind, None if seen else f"{dist.get_rank()} ({socket.gethostname()})")
    dist.barrier()
    if is_main():
        os.remove(path)
    blind = [b for b in blind if b]
    if blind and needs_shared:
        raise SystemExit(f"--out {out}: rank(s) {', '.join(blind)} cannot see what rank 0 writes "
                         "there; checkpoints (--save-every, --stop-at, --resume) need --out on a "
                         "filesystem every node mounts (NFS, Lustre, ...), as an absolute path")
    if blind:
        print0(f"--out {out}: rank(s) {', '.join(blind)} cannot see what rank 0 writes there; "
               f"without checkpoints that is fine: the log and final/ are written on rank 0's "
               f"node ({socket.gethostname()}) alone")
    found = parallel.broadcast([name for name in ("final", "checkpoints")
                                if os.path.exists(os.path.join(out, name))])
    if found and not resume:
        raise SystemExit(f"--out {out} already holds a run ({', '.join(found)}): add --resume to "
                         "continue it, or choose another --out")


# ----------------------------------------------------------------------------------------------
# The weights

def fetch_weights(model, metadata, timeout_min):
    """The directory of --model's weights, for rank 0, which alone reads them (build_model
    broadcasts them): it downloads them (a hub name) while the other ranks wait. Not in a
    collective, whose timeout (--dist-timeout-min) is sized for collectives, but on a gloo group
    of their own whose timeout is --download-timeout-min: 32B's 65 GB take an hour at 18 MB/s.
    Rank 0 sends its error if it has one, so that no rank waits out the bound for nothing."""
    world = dist.get_world_size()
    room = dist.new_group(backend="gloo", timeout=datetime.timedelta(minutes=timeout_min)) \
        if world > 1 else None
    path, error = metadata, None
    if is_main():
        if world > 1 and not os.path.isdir(model):
            print0(f"{model}: rank 0 fetches the weights; the other ranks wait up to "
                   f"--download-timeout-min {timeout_min:g} (on a slow link, prefetch them: "
                   "docs/gpu.md, 'Downloads')")
        try:
            path = hf.checkpoint_dir(model, hf.CHECKPOINT_FILES)
        except FileNotFoundError as e:
            error = str(e)
    if room is not None:
        t0, box = time.monotonic(), [error]
        try:
            dist.broadcast_object_list(box, src=0, group=room)
        except RuntimeError as e:
            why = str(e).strip().splitlines()[0][:200]
            raise SystemExit(f"rank {dist.get_rank()}: waited {(time.monotonic() - t0) / 60:.1f} "
                             f"min for rank 0 to fetch {model}'s weights ({why}): prefetch them "
                             f"with `hf download {model}` (docs/gpu.md, 'Downloads'), or raise "
                             f"--download-timeout-min {timeout_min:g}") from None
        dist.destroy_process_group(room)
        error = box[0]
    if error:
        raise SystemExit(error)
    return path


# ----------------------------------------------------------------------------------------------
# Model and optimizer

def use_checkpointing(flag, n_params):
    """--activation-checkpointing: auto = on for models over 1B parameters."""
    return flag == "on" or (flag == "auto" and n_params > 1e9)


def build_model(args, cfg, path, device, checkpointing, world):
    """Meta-device model -> FSDP2 shards -> weights: only rank 0 reads the checkpoint (or makes the
    random init) and set_model_state_dict broadcasts each tensor's shards to the other ranks."""
    with torch.device("meta"):
        model = qwen.Qwen2(cfg)
    model.checkpoint_blocks = checkpointing
    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=getattr(torch, args.dtype), reduce_dtype=torch.float32)
    for block in model.model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)  # the root: embedding, final norm, LM head
    # Our loss is already normalised over the global batch: gradients are summed, not averaged,
    # with a plain SUM (gloo has no pre-multiplied sum).
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    model.to_empty(device=device)
    full = {}
    if is_main():
        if args.init == "random":
            cpu_model = qwen.Qwen2(cfg)
            cpu_model.init_weights(seed=args.seed)
            full = cpu_model.state_dict()
        else:
            shapes = {k: v.shape for k, v in model.named_parameters()}  # a tied LM head: once
            # kept in the checkpoint's dtype (65 GB for 32B, not 131): the copy into the fp32
            # shards converts
            full = dict(hf.read_checkpoint(path, shapes, cfg.tie_word_embeddings))
        if cfg.tie_word_embeddings:
            full["lm_head.weight"] = full["model.embed_tokens.weight"]
    set_model_state_dict(model, full,
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def make_optimizer(model, args, device):
    # As s1's Trainer (transformers 4.46, get_decay_parameter_names): every parameter decays except
    # those named "bias" and the weights of nn.LayerNorm modules, which Qwen2 has none of, so its
    # RMSNorm weights decay too. (Later transformers also exempt norms; s1 ran 4.46.1.)
    decay = [p for n, p in model.named_parameters() if "bias" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=tuple(args.betas), eps=ADAM_EPS,
                             fused=device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# Checkpoints and the final model

def complete_checkpoints(out):
    folder = os.path.join(out, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(d for d in os.listdir(folder) if d.startswith("step_") and not d.endswith(".tmp"))


def save_checkpoint(model, opt, step, out, keep):
    """A sharded DCP checkpoint, written to a .tmp directory and renamed when complete; then all but
    the newest `keep` complete ones are deleted (never before the new one is whole)."""
    path = os.path.join(out, "checkpoints", f"step_{step:06d}")
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    if is_main() and os.path.exists(path + ".tmp"):  # a killed save's leftovers (saved again now)
        shutil.rmtree(path + ".tmp")
    dist.barrier()
    dcp.save(state, checkpoint_id=path + ".tmp")
    dist.barrier()
    if is_main():
        if os.path.exists(path):  # the same step saved by the run that was killed after it
            shutil.rmtree(path)
        os.rename(path + ".tmp", path)
        for old in complete_checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(out, "checkpoints", old))
    dist.barrier()


def load_latest_checkpoint(model, opt, out):
    # every rank loads the same one, or none does
    newest = parallel.broadcast((complete_checkpoints(out) or [None])[-1])
    if newest is None:
        raise SystemExit(f"--resume: no complete checkpoint in {os.path.join(out, 'checkpoints')}")
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=os.path.join(out, "checkpoints", newest))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    return int(newest.removeprefix("step_"))


def save_final_model(model, args, cfg, path):
    """The final model in Hugging Face format, in --save-dtype: rank 0 gathers every weight and
    writes them while the other ranks wait."""
    t0 = time.perf_counter()
    full = get_model_state_dict(model,
                                options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    gathered = time.perf_counter() - t0
    if not is_main():
        return
    dtype = getattr(torch, args.save_dtype)
    tok_dir = (path if args.tokenizer is None
               else hf.checkpoint_dir(args.tokenizer, hf.METADATA_FILES))
    final = os.path.join(args.out, "final")
    hf.save_pretrained({k: v.to(dtype) for k, v in full.items()}, final, cfg=cfg,
                       tokenizer_dir=tok_dir)
    size = sum(os.path.getsize(os.path.join(final, f)) for f in os.listdir(final)
               if f.endswith(".safetensors"))
    print0(f"saved {final}: {size / 1e9:.1f} GB in {time.perf_counter() - t0:.0f} s "
           f"(gather {gathered:.0f} s); --dist-timeout-min {args.dist_timeout_min:g} bounds it")


# ----------------------------------------------------------------------------------------------
# The log

def usage(device, cfg, lengths, seconds, world):
    """What a step of sequences of these lengths used of the machine: on CUDA its MFU (None on a GPU
    whose peak plan.GPU_PEAKS lacks) and memory, else the peak resident memory of this process
    (Linux reports KiB)."""
    if device.type != "cuda":
        return dict(peak_mem_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2)
    flops = sum(plan.train_flops(cfg, n) for n in lengths)
    peak = plan.gpu_peak(torch.cuda.get_device_name(device))  # None: a GPU of unknown peak
    # the device's view: tensors, the allocator's cache, the CUDA context, NCCL
    free, total = torch.cuda.mem_get_info()
    return dict(mfu=flops / seconds / (world * peak["bf16_tflops"] * 1e12) if peak else None,
                peak_mem_gb=torch.cuda.max_memory_allocated() / 1024 ** 3,
                reserved_gb=torch.cuda.max_memory_reserved() / 1024 ** 3,
                device_used_gb=(total - free) / 1024 ** 3)


def read_log(path):
    """The step records of log.jsonl, the last one of each step: a resumed run appends the steps it
    runs again (those after the checkpoint it resumed from), and nothing is ever deleted."""
    by_step = {r["step"]: r for r in jsonl.read_jsonl(path)}
    return [by_step[k] for k in sorted(by_step)]


def open_log(path, resume):
    """The JSONL step log, appended to on --resume (a torn last line is cut first: jsonl.py). A
    fresh run in a directory whose earlier run left only a log (it died before any checkpoint)
    moves that log aside rather than mixing the two."""
    if not resume and os.path.exists(path):
        aside = path.replace(".jsonl", f".{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        os.replace(path, aside)
        print0(f"{path}: an earlier run's log, kept as {aside}")
    if resume:
        jsonl.resume(path)
    return open(path, "a")


# ----------------------------------------------------------------------------------------------
# The command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="hub name or local checkpoint directory")
    p.add_argument("--init", choices=["pretrained", "random"], default="pretrained",
                   help="random: train from scratch with the checkpoint's config.json "
                        "(the CPU demo)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory or hub name (default: --model)")
    p.add_argument("--data", default=DATA,
                   help="hub dataset, or a local .jsonl/.json/.parquet with a question, a thinking "
                        "and an answer column: question | thinking, deepseek_thinking_trajectory, "
                        "thinking_trajectories, gemini_thinking_trajectory | answer, "
                        "deepseek_attempt, attempt, gemini_attempt (first present wins; s1K-1.1 "
                        "maps to its deepseek_* columns)")
    p.add_argument("--out", default="runs/s1",
                   help="output directory: log, config, checkpoints, final model; on several "
                        "nodes with checkpoints, an absolute path on storage they all mount")
    p.add_argument("--epochs", type=cli.at_least(1), default=EPOCHS)
    p.add_argument("--global-batch", type=cli.at_least(1), default=GLOBAL_BATCH,
                   help="sequences per optimizer step")
    p.add_argument("--block-size", type=cli.at_least(16), default=BLOCK_SIZE,
                   help="longest sequence; longer ones are cut on the right (s1.1: 20000, from "
                        "s1's README prose; s1: 32768, train/sft.sh l. 17)")
    p.add_argument("--lr", type=cli.above(0), default=LR)
    p.add_argument("--warmup-ratio", type=cli.between(0, 1), default=WARMUP_RATIO,
                   help="linear warm-up share of the steps")
    p.add_argument("--weight-decay", type=cli.at_least(0, float), default=WEIGHT_DECAY,
                   help="on every weight but biases, the RMSNorm weights included, as "
                        "transformers 4.46 (s1's) did")
    p.add_argument("--betas", type=cli.between(0, 0.999999), nargs=2, default=BETAS)
    p.add_argument("--grad-clip", type=cli.above(0), default=GRAD_CLIP)
    p.add_argument("--loss-norm", choices=["sequence", "token"], default=LOSS_NORM,
                   help="sequence: mean over each sequence's loss tokens, then over the batch (s1 "
                        "via HF Trainer at batch 1 per GPU); token: sum over all loss tokens of "
                        "the step / their count")
    p.add_argument("--pack", action="store_true",
                   help="pack whole sequences into micro-batches of --block-size tokens")
    p.add_argument("--activation-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="recompute each block in backward; auto = on for models over 1B "
                        "parameters")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=DTYPE,
                   help="compute dtype; master weights, gradient reduction and optimizer state "
                        "are fp32")
    p.add_argument("--save-dtype", choices=["bfloat16", "float32"], default=SAVE_DTYPE,
                   help="dtype of the final model: fp32 as s1 saved and evaluated it; bf16 halves "
                        "the files but rounds back part of what training changed "
                        "(docs/training.md)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--seed", type=cli.at_least(0), default=SEED,
                   help="shuffling and random init (HF Trainer's default 42)")
    p.add_argument("--save-every", type=cli.at_least(0), default=0,
                   help="distributed checkpoint every N steps (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=cli.at_least(1), default=2,
                   help="complete checkpoints kept (older ones go once a newer one is complete); "
                        "32B with AdamW: 393 GB each")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out")
    p.add_argument("--allow-config-change", action="store_true",
                   help="--resume although the data, schedule or optimizer flags differ from the "
                        "run's")
    p.add_argument("--dist-timeout-min", type=cli.above(0), default=60,
                   help="collective timeout; torch's default 10 min is less than rank 0 may need "
                        "to read or write 131 GB of fp32 weights on a slow disk while the other "
                        "ranks wait")
    p.add_argument("--download-timeout-min", type=cli.above(0), default=24 * 60,
                   help="how long the other ranks wait while rank 0 downloads --model's weights "
                        "(a hub name: 65 GB for 32B); a failed download ends the wait at once")
    p.add_argument("--probe-longest", action=argparse.BooleanOptionalAction, default=True,
                   help="after step 1, a forward and backward on the run's longest micro-batch "
                        "whose gradient is dropped, so that a micro-batch too long for memory "
                        "fails at once; the trained weights are the same")
    p.add_argument("--stop-at", type=cli.at_least(0), default=0,
                   help="stop (with a checkpoint) once this step is done; the schedule is that of "
                        "the full run")
    cli.add_dry_run_flags(p, gpus=GPUS)
    return p.parse_args(argv)


if __name__ == "__main__":
    fits = cli.main(main)  # --dry-run: whether the plan fits (exit code 1 if not)
    parallel.exit_now(1 if fits is False else 0)
