"""parallel.py: processes and ranks. One process group setup for every stage, rank 0's decisions on
every rank, one way out, the tensor-parallel split of a model for generation, and generation's
layout: replicas that share out the questions and send their rows back to rank 0.

Under torchrun every stage runs one process per GPU (NCCL), or per CPU process (gloo):
    train.py         FSDP2: every rank holds a shard of the model and of the optimizer
    sample.py (and eval.py, prepare.py distill --teacher local, curate.py features with local
                     solvers)  data x tensor parallel: the world is dp replicas of tp consecutive
                     ranks (--tp); a replica's ranks each hold a slice of every block and run the
                     same engine on the same questions, and each replica takes its share of the
                     questions (deal); rank 0 alone reads the outputs and writes them whole
    serve.py         one replica: every rank in one tensor-parallel group
"""
import datetime
import glob
import json
import os
import socket
import sys
from collections import namedtuple

from machinery import cli, jsonl

# torch is imported inside the functions that use it: prepare.py and curate.py import this file for
# WORLD and RANK, and most of their runs never need torch (importing it costs 1.5 s).

# torchrun sets them
WORLD, RANK = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


def init_distributed(device="auto", timeout_min=60, always=False):
    """(device, world, rank). Under torchrun, join the process group: NCCL on CUDA, each process
    on the GPU of its LOCAL_RANK, else gloo. always: a plain `python` run gets a group of one too
    (FSDP2 needs one). device: --device, resolved and checked first (cli.device: a GPU node whose
    torch cannot use the GPU stops here). timeout_min bounds every collective; torch's default,
    10 minutes, is less than the other ranks may wait while rank 0 reads or writes 131 GB of
    weights, or grades."""
    import torch
    import torch.distributed as dist
    device = cli.device(device) if isinstance(device, str) else device
    if always and "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if (world > 1 or always) and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_min))
    return device, world, rank


def group():
    """torch.distributed while a process group is up, else None (torch is not imported for this:
    where nothing imported it, no group can be up)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_initialized() else None


def is_main():
    return group() is None or group().get_rank() == 0


def print0(*a):
    if is_main():
        print(*a, flush=True)


def broadcast(obj):
    """Rank 0's value of obj on every rank (what is left to do must be the same everywhere)."""
    dist = group()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def exit_now(code=0):
    """Leave the process group together with the other ranks, then the process at once. gloo can
    abort at interpreter exit while its threads still hold tensors (seen on CPU); leaving through
    os._exit after a clean shutdown avoids it. Every stage that may have joined a group ends here;
    a process that joined none leaves as usual, with exit code `code`."""
    dist = group()
    if dist is None:
        sys.exit(code)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


def workers_leave():
    """After the last generate call: every rank waits for the others and leaves the process group;
    ranks other than 0 exit here, rank 0 goes on alone with what follows (grading, writing)."""
    dist = group()
    if dist is None:
        return
    rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        exit_now()


# ----------------------------------------------------------------------------------------------
# Tensor parallelism: Megatron-style column/row split of each block, for models larger than one GPU

def tensor_parallel_slice(rank, world):
    """A from_pretrained select that reads only this rank's slice of every block weight: q/k/v (and
    their biases), gate and up by output features (rows: whole heads), o_proj and down by input
    features (columns). Embedding, norms and LM head stay whole on every rank. Each rank's KV pool
    holds its heads only. The pieces are torch.chunk's, so every rank's are the same as if it had
    read the whole tensor and chunked it."""
    def piece(n):
        size = -(-n // world)  # torch.chunk's piece size
        return slice(rank * size, min(n, (rank + 1) * size))

    def select(name, shape):
        if any(k in name for k in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            return (piece(shape[0]),)
        if any(k in name for k in ("o_proj", "down_proj")):
            return (slice(None), piece(shape[1]))
        return None
    return select


def split_heads(model, tp, group=None):
    """A model loaded through tensor_parallel_slice: each rank attends with its share of the heads,
    and adds up the partial sums that its o_proj and down_proj produce over its tensor-parallel
    group (model.tp_group, which the engine's collectives use too; None: the whole world)."""
    import torch.distributed as dist
    for block in model.model.layers:
        block.self_attn.n_heads //= tp
        block.self_attn.n_kv_heads //= tp
        for proj in (block.self_attn.o_proj, block.mlp.down_proj):
            proj.register_forward_hook(lambda mod, inp, out: dist.all_reduce(out, group=group)
                                       or out)
    model.tp_group = group
    return model


# ----------------------------------------------------------------------------------------------
# Data x tensor parallelism for generation: replicas of tp consecutive ranks, each taking its share
# of the questions; rank 0 writes one output

# A process's place: tp ranks per replica, dp replicas, which replica, its rank inside it. The
# current model's (set_layout, which sample.load_for_generation calls): a process generates with
# one model at a time.
Layout = namedtuple("Layout", "tp dp replica tp_rank")
layout = Layout(1, 1, 0, 0)
_gather_group = None  # merge_parts' (gloo): a replica may finish hours before the others


def layout_of(world, rank, tp):
    """The Layout of `rank` among `world` processes at tensor-parallel degree tp. Consecutive ranks
    form a replica (0..tp-1 the first), as torchtitan and vLLM place them, so that a replica stays
    on one node, where its all-reduces are fast."""
    if world % tp:
        raise SystemExit(f"--tp {tp} does not divide the {world} process(es) (torchrun's "
                         "--nproc-per-node times the nodes)")
    return Layout(tp, world // tp, rank // tp, rank % tp)


def set_layout(tp, timeout_min=60):
    """Make this process's Layout at degree tp the current one; returns its tensor-parallel process
    group: None for tp 1 (no collectives), the world when tp is every rank, else a subgroup. Every
    rank calls it together, with the same tp."""
    global layout, _gather_group
    dist = group()
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist else (1, 0)
    layout = layout_of(world, rank, tp)
    if layout.dp > 1 and _gather_group is None:  # now, while every rank is here: gloo on the CPU,
        # for merge_parts, which waits as long as the slowest replica takes
        _gather_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=365))
    if tp == 1 or tp == world:
        return None if tp == 1 else dist.group.WORLD
    timeout = datetime.timedelta(minutes=timeout_min)
    return dist.new_subgroups(group_size=tp, timeout=timeout)[0]


def deal(items, key=None):
    """This replica's share of items: item i goes to replica i % dp; with key, the i-th distinct
    key (in order of first appearance) goes to replica i % dp with every item of that key (e.g. a
    question, so that its settings and samples share their prefix in one engine). A fixed deal:
    the same inputs give every replica the same share; and as a row's draws depend on its seed,
    question and sample alone, the results are those of one process."""
    if key is None:
        return list(items)[layout.replica::layout.dp]
    number = {}
    for item in items:
        number.setdefault(key(item), len(number))
    return [item for item in items if number[key(item)] % layout.dp == layout.replica]


def writes():
    """Whether this rank writes its replica's rows (its first rank does)."""
    return layout.tp_rank == 0


def part_path(path, replica):
    return f"{path}.part{replica}"


def open_output(path):
    """The file this rank appends its finished rows to, as they finish: path itself on one replica
    (rank 0; with --output, resumable as before), else the replica's own part file (path.partN,
    written by its first rank, merged into path by merge_parts); os.devnull for a rank that does
    not write."""
    if not writes():
        return open(os.devnull, "w")
    if layout.dp == 1:
        return open(path, "a")
    return open(part_path(path, layout.replica), "w")  # a stale part was merged by recover_parts


def merge_parts(path, order):
    """After generating, on every rank together: each replica's rows (its part file, read back by
    the rank that wrote it, so no storage need be shared) go to rank 0, which appends them to path
    sorted by order(record) (question order), syncs it, and returns them; then the parts are
    removed. [] on other ranks, and on one replica (its rows are in path already)."""
    if layout.dp == 1:
        return []
    import torch.distributed as dist
    part = part_path(path, layout.replica)
    rows = jsonl.read_jsonl(part) if writes() and os.path.exists(part) else []
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(rows, gathered, dst=0, group=_gather_group)
    merged = []
    if dist.get_rank() == 0:
        merged = sorted((r for rows in gathered for r in rows), key=order)
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in merged)
            f.flush()
            os.fsync(f.fileno())
    dist.barrier(group=_gather_group)  # path holds every row before any part goes
    if writes() and os.path.exists(part):
        os.remove(part)
    return merged


def recover_parts(path):
    """Rank 0, before reading path to resume it: the rows that a stopped data-parallel run left in
    its part files (path.partN beside it: every part on one node, or on storage every node sees)
    are appended to path, those not in it already, and the parts removed. A part on another node's
    own disk is not seen: its rows are generated again."""
    parts = sorted(glob.glob(glob.escape(path) + ".part[0-9]*"))
    if not parts:
        return
    have = {json.dumps(r) for r in jsonl.resume(path)}  # also cuts path's torn last line
    rows = [json.dumps(r) for p in parts for r in jsonl.resume(p)]
    new = [r for r in dict.fromkeys(rows) if r not in have]
    with open(path, "a") as f:
        f.writelines(r + "\n" for r in new)
        f.flush()
        os.fsync(f.fileno())
    for p in parts:
        os.remove(p)
    print(f"{path}: {len(new)} row(s) recovered from the part files of a stopped run "
          f"({', '.join(os.path.basename(p) for p in parts)})", file=sys.stderr)
