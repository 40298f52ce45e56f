"""parallel.py: processes and ranks. One process group setup for every stage, rank 0's decisions on
every rank, one way out, and the tensor-parallel split of a model for generation.

Under torchrun every stage runs one process per GPU (NCCL), or per CPU process (gloo):
    train.py         FSDP2: every rank holds a shard of the model and of the optimizer
    sample.py (and eval.py, serve.py, prepare.py distill --teacher local, curate.py features with
                     local solvers)  tensor parallelism: every rank holds a slice of every block and
                     runs the same engine on the same inputs; rank 0 alone reads and writes files
"""
import datetime
import os
import socket
import sys

from machinery import cli

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


def split_heads(model, world):
    """A model loaded through tensor_parallel_slice: each rank attends with its share of the heads,
    and adds up the partial sums that its o_proj and down_proj produce."""
    import torch.distributed as dist
    for block in model.model.layers:
        block.self_attn.n_heads //= world
        block.self_attn.n_kv_heads //= world
        for proj in (block.self_attn.o_proj, block.mlp.down_proj):
            proj.register_forward_hook(lambda mod, inp, out: dist.all_reduce(out) or out)
    return model
