"""engine.py: the inference engine under sample.py: a sampler, a paged KV cache, continuous batching
and forks. Budget forcing stays in sample.Row: the engine asks a row for the token it feeds next
(Row.next_token) and what it may not draw (Row.banned), and reads only how it samples (temperature,
top_p, seed), its tokens, its forced queue and its phase.

Read it in this order:
  1. The sampler: one token per row, greedy or temperature + nucleus, with noise from the row's
     seed alone (a row draws the same token alone or in any batch).
  2. The paged KV cache: one pool of fixed-size blocks per layer; a sequence holds a list of block
     ids (its block table) and gets a block each time it fills one; blocks are reference-counted so
     that sequences can share a prefix, and a shared block is copied before it is written.
     PagedBatch is what one forward knows of it: where new keys go, and which kernel attends.
  3. The engine: a scheduler that admits waiting prompts whenever slots and blocks are free, a step
     that runs one forward for every running sequence, and preemption (free the newest sequence's
     blocks, recompute it later) when the pool runs out.
  4. Sharing (fork): the rows of one question (its samples, its budget-forcing settings) start as
     one sequence and split only where they would feed different tokens. A cap forks at its
     position; "Wait" forks at a natural end. A whole Figure 1 sweep costs about its longest
     setting.
"""
import inspect
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

import model as qwen
from machinery import plan

# The paged decode kernels, which read the block tables themselves (CUDA, fp16/bf16): torch's own
# varlen_attn in its block_table=/seqused_k= form (torch 2.13; older torch lacks it), else
# flash-attn's flash_attn_with_kvcache if installed; without either, decoding gathers the blocks
# for SDPA.
paged_varlen_attn = qwen.varlen_attn if qwen.varlen_attn is not None and \
    "block_table" in inspect.signature(qwen.varlen_attn).parameters else None
try:
    from flash_attn import flash_attn_with_kvcache
except ImportError:
    flash_attn_with_kvcache = None
# Both read blocks of a multiple of 256 tokens only: "Paged KV cache block size must be divisible by
# 256" (torch 2.13.0+cu130's libtorch_cuda.so, the check of its flash kernel), "page_block_size must
# be a multiple of 256" (flash-attn 2.8.3's flash_attn_with_kvcache docstring).
PAGED_BLOCK = 256


# ----------------------------------------------------------------------------------------------
# 1. The sampler

def hash32(x):
    """A 32-bit integer hash of each element of x (int64, values in [0, 2^32)), in place: two rounds
    of xor-shift and multiply, each product below 2^59, so int64 arithmetic never overflows."""
    for _ in range(2):
        x.bitwise_xor_(x >> 16).mul_(0x45D9F3B).remainder_(2 ** 32)
    return x.bitwise_xor_(x >> 16)


def uniform_noise(seeds, vocab, device):
    """Uniform (0, 1) noise for every (row, token id): a hash of the row's seed (any int in
    [0, 2^63)) and the id, so that a row's noise depends on its seed alone, drawn for all rows at
    once (a seeded generator per row would cost a generator and a kernel per row per step)."""
    seeds = torch.tensor(seeds, dtype=torch.int64, device=device)[:, None]
    key = hash32(hash32(seeds % 2 ** 32) ^ (seeds >> 32))  # the 63-bit seed folded to 32 bits
    bits = hash32(key ^ hash32(torch.arange(vocab, device=device)))
    return ((bits >> 9) + 0.5) / 2 ** 23  # 23 bits + 0.5 is exact in float32: never 0 or 1


def nucleus(logp, top_p):
    """Log-probabilities outside the smallest set of tokens whose probability reaches top_p (per
    row) set to -inf. A function of its own, so that the sort's copies are freed on return."""
    sorted_p, order = logp.exp().sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p > top_p[:, None]
    return logp.scatter(-1, order, torch.where(outside, float("-inf"), logp.gather(-1, order)))


def sample_tokens(logits, temperature, top_p, vocab_size, seeds=0, banned=None):
    """One token per row of logits: greedy where the row's temperature is 0, else temperature +
    nucleus sampling (temperature, top_p and seeds: one per row, or one for all). A row's draw is
    the Gumbel-max trick with noise from its seed alone, so it does not depend on which other rows
    share the batch: a forked or resumed row draws what it would have drawn alone. Ids past the
    tokenizer's vocabulary (the checkpoint pads its embedding to 151,936 rows) are never sampled:
    s1's README reports vLLM crashing on them at temperature 1. banned: per row, ids it may not
    draw.
    Every decision is made on the host from the arguments: the only wait for the GPU is the caller's
    reading of the tokens."""
    per_row = lambda x: list(x) if isinstance(x, (list, tuple)) else [x] * len(logits)
    logits = logits.float()
    logits[:, vocab_size:] = float("-inf")
    rows = [(i, t) for i, ids in enumerate(banned or []) for t in ids]
    if rows:
        logits[tuple(torch.tensor(rows, device=logits.device).T)] = float("-inf")
    greedy = logits.argmax(-1)
    if not any(per_row(temperature)):
        return greedy
    temperatures, top_ps = (torch.tensor(per_row(x), dtype=torch.float32, device=logits.device)
                            for x in (temperature, top_p))
    logp = torch.log_softmax(logits / temperatures.clamp(min=1e-6)[:, None], dim=-1)
    if any(p < 1 for p in per_row(top_p)):
        logp = nucleus(logp, top_ps)
    gumbel = -torch.log(-torch.log(uniform_noise(per_row(seeds), logits.shape[-1], logits.device)))
    return torch.where(temperatures == 0, greedy, (logp + gumbel).argmax(-1))


# ----------------------------------------------------------------------------------------------
# 2. The paged KV cache

class BlockPool:
    """Keys and values of every layer in fixed-size blocks: k[layer] is (blocks, block_size,
    kv_heads, head_dim), the [pages, page, Hkv, D] layout the paged kernels read. A block is free,
    or held by one or more sequences (refs counts them: shared prefixes)."""

    def __init__(self, cfg, num_blocks, block_size, kv_heads, device, dtype):
        shape = (cfg.num_hidden_layers, num_blocks, block_size, kv_heads, cfg.head_dim)
        # zeros, not empty: a padded batch reads unused slots (masked), and 0 * NaN would be NaN
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.block_size = block_size
        self.free = list(range(num_blocks - 1, -1, -1))  # pop() hands out block 0 first
        self.refs = [0] * num_blocks

    def allocate(self):
        block = self.free.pop()
        self.refs[block] = 1
        return block

    def share(self, blocks):
        for block in blocks:
            self.refs[block] += 1

    def release(self, blocks):
        for block in blocks:
            self.refs[block] -= 1
            if self.refs[block] == 0:
                self.free.append(block)

    def copy_on_write(self, block):
        """A private copy of a shared block, for the sequence about to write into it."""
        new = self.allocate()
        self.k[:, new], self.v[:, new] = self.k[:, block], self.v[:, block]
        self.release([block])
        return new


def paged_kernel(like, block_size):
    """The kernel that decodes over a pool of `block_size`-token blocks with the device and dtype of
    tensor `like`: "varlen_attn" (torch's) or "flash_attn_with_kvcache", which read the block tables
    themselves; None: gather the blocks for SDPA (a CPU, fp32, a torch without the paged form, or
    blocks that are not a multiple of PAGED_BLOCK)."""
    if not qwen.flash_kernels_run(like) or block_size % PAGED_BLOCK:
        return None
    if paged_varlen_attn:
        return "varlen_attn"
    return "flash_attn_with_kvcache" if flash_attn_with_kvcache else None


class PagedBatch:
    """What one forward needs to know about the pool: where each new token's k and v go, and
    which slots each sequence attends over. The model calls attend() in every layer, so everything
    attend needs is made here, once per step, from host values: attend never waits for the GPU.
    Decode steps feed one token per sequence, as a (B, 1) batch that attends over the pool.
    Prefills feed whole sequences (new prompts, or preempted sequences recomputed) packed in one
    (1, N) row: their keys are all new, so they attend as packed training does, and only their
    k and v are stored. (Forks share blocks instead of prefilling.)"""

    def __init__(self, pool, seqs, device):
        bs, self.pool = pool.block_size, pool
        self.decode = all(len(s.ids) - s.cached == 1 for s in seqs)
        assert self.decode or all(s.cached == 0 for s in seqs), "a prefill starts at position 0"
        starts, ends = [s.cached for s in seqs], [len(s.ids) for s in seqs]
        tables = torch.zeros(len(seqs), max(len(s.blocks) for s in seqs), dtype=torch.int32)
        slots, positions = [], []
        for i, (s, start, end) in enumerate(zip(seqs, starts, ends)):
            tables[i, :len(s.blocks)] = torch.tensor(s.blocks, dtype=torch.int32)
            positions += range(start, end)
            slots += [s.blocks[p // bs] * bs + p % bs for p in range(start, end)]
        self.tables = tables.to(device)
        self.slots = torch.tensor(slots, device=device)
        shape = (len(seqs), 1) if self.decode else (1, -1)
        self.positions = torch.tensor(positions, device=device).view(shape)
        # index of each sequence's last new token among all new tokens: its logits are the ones kept
        new_tokens = torch.tensor(ends, device=device).sub(torch.tensor(starts, device=device))
        self.last = new_tokens.cumsum(0) - 1
        self.lengths = torch.tensor(ends, device=device, dtype=torch.int32)
        self.max_len = max(ends)  # a Python int: the kernels take it as such
        cumulative = lambda xs: torch.tensor([0, *xs], device=device).cumsum(0).to(torch.int32)
        self.kernel = paged_kernel(pool.k, bs) if self.decode else None
        if not self.decode:
            self.cu_seqlens = cumulative(ends)
        elif self.kernel:  # one query per sequence, over the first `lengths` slots of its table
            self.cu_q, self.cu_k = cumulative([1] * len(seqs)), cumulative(ends)
        elif qwen.flash_kernels_run(pool.k):  # gather + SDPA on a GPU: rows of one length together
            by_length = {}
            for i, n in enumerate(ends):
                by_length.setdefault(n, []).append(i)
            self.groups = []
            for n, rows in by_length.items():
                pos, rows = torch.arange(n, device=device), torch.tensor(rows, device=device)
                self.groups.append((rows, self.tables[rows][:, pos // bs].long() * bs + pos % bs))
        else:  # gather + SDPA on a CPU (or in fp32): every row padded to the longest, one call
            pos, self.groups = torch.arange(self.max_len, device=device), None
            self.gather = self.tables[:, pos // bs].long() * bs + pos % bs
            self.visible = (pos[None, :] < self.lengths[:, None])[:, None, None]

    def attend(self, layer, q, k, v):
        """Store this layer's new k, v in their slots, then attend: (B, T, heads, head_dim) in and
        out."""
        H, D = k.shape[-2:]
        k_pool, v_pool = self.pool.k[layer], self.pool.v[layer]
        k_pool.view(-1, H, D)[self.slots] = k.reshape(-1, H, D)
        v_pool.view(-1, H, D)[self.slots] = v.reshape(-1, H, D)
        if not self.decode:
            return qwen.packed_attention(q[0], k[0], v[0], self.cu_seqlens, self.max_len)[None]
        if self.kernel == "varlen_attn":
            return paged_varlen_attn(q[:, 0], k_pool, v_pool, self.cu_q, self.cu_k, 1, self.max_len,
                                     enable_gqa=True, seqused_k=self.lengths,
                                     block_table=self.tables)[:, None]
        if self.kernel == "flash_attn_with_kvcache":
            return flash_attn_with_kvcache(q, k_pool, v_pool, cache_seqlens=self.lengths,
                                           block_table=self.tables, causal=True)
        if self.groups is None:  # the CPU's kernels take a mask with GQA; one call is 2.2x faster
            # (B, H, L, D), the padding masked out
            keys = k_pool.view(-1, H, D)[self.gather].transpose(1, 2)
            values = v_pool.view(-1, H, D)[self.gather].transpose(1, 2)
            return F.scaled_dot_product_attention(q.transpose(1, 2), keys, values,
                                                  attn_mask=self.visible,
                                                  enable_gqa=True).transpose(1, 2)
        # On a GPU, SDPA with no mask, per group of rows of one length. With a mask and GQA heads,
        # CUDA's flash kernel (no mask) and efficient kernel (no GQA) both refuse the call, which
        # leaves cuDNN or the math kernel, and math copies K and V to every query head: GBs per
        # layer at 64 x 32K.
        out = torch.empty_like(q)
        for rows, slots in self.groups:
            keys = k_pool.view(-1, H, D)[slots].transpose(1, 2)  # (rows, H, length, D)
            values = v_pool.view(-1, H, D)[slots].transpose(1, 2)
            out[rows] = F.scaled_dot_product_attention(q[rows].transpose(1, 2), keys, values,
                                                       enable_gqa=True).transpose(1, 2)
        return out


# ----------------------------------------------------------------------------------------------
# 3. The engine: sequences, the scheduler, the step

@dataclass(eq=False)
class Seq:
    """Tokens in the KV cache and the rows that share them: every row of a Seq has fed exactly
    `ids` after its prompt (their budget-forcing states may differ: a row that hit its cap shares
    the sequence until its forced answer feeds a token the others do not). ids[:cached] are in the
    blocks; the next forward feeds ids[cached:] (one token when decoding; a whole prompt, or a
    preempted sequence, in a prefill)."""
    ids: list
    rows: list
    blocks: list = field(default_factory=list)
    cached: int = 0


class Engine:
    """Continuous batching on a paged KV cache. add() queues a prompt with its rows; every step()
    runs one forward and returns the rows that finished."""

    def __init__(self, model, max_tokens, max_rows=64, vocab_size=None, kv_memory_gb=None,
                 block_size=None, on_token=None):
        """max_tokens: the longest sequence (prompt + generated) a row may reach; the pool holds at
        least one. max_rows: most sequences admitted at once. on_token(row) after each token."""
        self.model, self.max_tokens, self.max_rows = model, max_tokens, max_rows
        self.on_token = on_token
        self.vocab_size = vocab_size or model.cfg.vocab_size
        self.device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
        # the paged kernels' block size; without them, small blocks waste less
        paged = paged_kernel(model.lm_head.weight, PAGED_BLOCK)
        block_size = block_size or (PAGED_BLOCK if paged else 16)
        # this rank's share under tensor parallelism, over its group (parallel.split_heads)
        kv_heads = model.model.layers[0].self_attn.n_kv_heads
        tp_group = getattr(model, "tp_group", None)
        per_block = block_size * plan.kv_bytes_per_token(model.cfg, kv_heads, dtype.itemsize)
        if kv_memory_gb is not None:
            budget = kv_memory_gb * 1e9
        elif self.device.type == "cuda":  # what the weights left, less one step's activations
            # memory an earlier engine's pool left in PyTorch's cache counts as free
            torch.cuda.empty_cache()
            tp = dist.get_world_size(tp_group) if tp_group is not None else 1
            activations = plan.activation_bytes(model.cfg, max_tokens, max_rows, tp, dtype.itemsize)
            budget = 0.9 * torch.cuda.mem_get_info(self.device)[0] - activations
        else:  # CPU: every row at full context, at most 4 GB
            budget = min(4e9, max_rows * -(-max_tokens // block_size) * per_block)
        num_blocks = int(budget // per_block)
        if tp_group is not None:  # a replica's ranks must schedule alike: the smallest pool wins
            where = self.device if dist.get_backend(tp_group) == "nccl" else "cpu"
            n = torch.tensor(num_blocks, device=where)
            dist.all_reduce(n, op=dist.ReduceOp.MIN, group=tp_group)
            num_blocks = int(n)
        if num_blocks < -(-max_tokens // block_size):
            raise ValueError(f"the KV pool holds {num_blocks * block_size} tokens, less than one "
                             f"row of max_tokens={max_tokens}: give more kv_memory_gb (one token "
                             f"takes {per_block / block_size / 1e6:.3f} MB) or fewer max_tokens")
        self.pool = BlockPool(model.cfg, num_blocks, block_size, kv_heads, self.device, dtype)
        self.prefill_tokens = max(max_tokens, 8192)  # most prompt tokens in one prefill forward
        self.waiting, self.running = deque(), []
        self.fed = self.steps = self.preempted = self.forks = 0  # statistics

    def add(self, prompt, rows):
        self.waiting.append(Seq(list(prompt), rows))

    def busy(self):
        return bool(self.waiting or self.running)

    def cancel(self, rows):
        """Drop rows (their client left, or a stop string matched); free what only they held."""
        rows = set(map(id, rows))
        for queue in (self.running, self.waiting):
            for seq in list(queue):
                seq.rows = [r for r in seq.rows if id(r) not in rows]
                if not seq.rows:
                    queue.remove(seq)
                    self.pool.release(seq.blocks)

    # -- the scheduler

    def admit(self):
        """Waiting sequences that get slots and blocks now (oldest first), for one prefill. Slots
        count rows, not sequences: a sequence can fork into as many sequences as it has rows."""
        batch, tokens, bs = [], 0, self.pool.block_size
        rows = sum(len(s.rows) for s in self.running)
        while self.waiting and (rows + len(self.waiting[0].rows) <= self.max_rows
                                or not self.running + batch):
            seq = self.waiting[0]
            need = -(-len(seq.ids) // bs)
            # keep a block free per running sequence, so that the next decode step has room to grow
            if need + len(self.running) + len(batch) > len(self.pool.free) or \
                    batch and tokens + len(seq.ids) > self.prefill_tokens:
                break
            self.waiting.popleft()
            seq.blocks = [self.pool.allocate() for _ in range(need)]
            batch.append(seq)
            tokens, rows = tokens + len(seq.ids), rows + len(seq.rows)
        self.running += batch
        return batch

    def room_for_next_token(self, seq):
        """Give the slot of seq's next token a block of its own; False if the pool is empty."""
        if seq.cached == len(seq.blocks) * self.pool.block_size:  # its blocks are full: take one
            if not self.pool.free:
                return False
            seq.blocks.append(self.pool.allocate())
        elif self.pool.refs[seq.blocks[-1]] > 1:  # its last block is shared: copy, then write
            if not self.pool.free:
                return False
            seq.blocks[-1] = self.pool.copy_on_write(seq.blocks[-1])
        return True

    def make_room(self):
        """Every running sequence, each with a slot for its next token; when the pool runs out,
        the newest sequence is preempted: its blocks are freed and it is recomputed later."""
        i = 0
        while i < len(self.running):
            if self.room_for_next_token(self.running[i]):
                i += 1
                continue
            seq = self.running.pop()
            self.pool.release(seq.blocks)
            seq.blocks, seq.cached = [], 0
            self.waiting.appendleft(seq)
            self.preempted += 1
        # a copy: forks and finished sequences change the list during the step
        return list(self.running)

    # -- the step

    def step(self):
        """One forward: a prefill of newly admitted sequences if any fit, else one decoded token for
        every running sequence. Returns the rows that finished."""
        batch = self.admit() or self.make_room()
        if not batch:
            if self.waiting and not self.running:
                raise RuntimeError(f"the KV pool ({len(self.pool.refs)} blocks) cannot hold a "
                                   "waiting sequence")
            return []
        new = [t for s in batch for t in s.ids[s.cached:]]
        view = PagedBatch(self.pool, batch, self.device)
        input_ids = torch.tensor(new, device=self.device).view(view.positions.shape)
        with torch.no_grad():
            logits = self.model(input_ids, cache=view)
        self.fed, self.steps = self.fed + len(new), self.steps + 1
        for seq in batch:
            seq.cached = len(seq.ids)
        return self.advance_all(batch, logits)

    def advance_all(self, seqs, logits):
        """Every row's next token, from its budget forcing (Row.next_token) and, where that asks
        for one, a draw from its sequence's logits; rows that draw alike draw once (a sweep's
        settings). Each sequence whose rows now feed different tokens splits (a fork); a sequence
        whose rows are all done frees its blocks. Returns the rows that finished."""
        keys = {self.draw_key(i, row, row.banned()): None
                for i, seq in enumerate(seqs) for row in seq.rows if not row.forced}
        drawn = dict(zip(keys, self.draw(logits, list(keys)))) if keys else {}

        def draw(i, row, banned):
            key = self.draw_key(i, row, banned)
            if key not in drawn:  # a redraw: the delimiter was dropped, and now it is banned
                drawn[key] = self.draw(logits, [key])[0]
            return drawn[key]

        finished = []
        for i, seq in enumerate(seqs):
            groups = {}  # rows that feed the same next token stay one sequence; the others fork
            for row in seq.rows:
                token = row.next_token(lambda banned: draw(i, row, banned))
                if token is not None:
                    self.on_token and self.on_token(row)
                if row.phase == "done":  # the answer is closed, or the context is full
                    finished.append(row)
                else:
                    groups.setdefault(token, []).append(row)
            self.split(seq, list(groups.items()))
        return finished

    @staticmethod
    def draw_key(i, row, banned):
        """What a draw depends on: its sequence's logits, the row's seed at this position, how it
        samples and what it may not draw. Rows with the same key draw the same token."""
        seed = 0 if row.temperature == 0 else (row.seed * 1_000_003 + len(row.tokens)) % 2 ** 63
        return i, seed, row.temperature, row.top_p, tuple(sorted(banned))

    def draw(self, logits, keys):
        """One token per key (draw_key), in one batched call of the sampler."""
        index, seeds, temperatures, top_ps, banned = zip(*keys)
        return sample_tokens(logits[list(index)], list(temperatures), list(top_ps), self.vocab_size,
                             list(seeds), list(banned)).tolist()

    def split(self, seq, groups):
        if not groups:  # every row is done
            self.running.remove(seq)
            self.pool.release(seq.blocks)
            return
        for token, rows in groups[1:]:  # a fork shares every block; the first write copies
            child = Seq(seq.ids + [token], rows, list(seq.blocks), seq.cached)
            self.pool.share(child.blocks)
            self.running.append(child)
            self.forks += 1
        token, seq.rows = groups[0]
        seq.ids.append(token)
