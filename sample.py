"""sample.py: s1's budget forcing on a small inference engine of our own.

    python sample.py --model simplescaling/s1.1-32B --prompt "How many r in raspberry?" --max-thinking-tokens 2000
    python sample.py --model DIR --input questions.jsonl --output samples.jsonl --num-ignore 2   # resumable
    torchrun --nproc-per-node 8 sample.py --model simplescaling/s1.1-32B --input ...             # tensor parallel
    python sample.py --dry-run --model Qwen/Qwen2.5-32B-Instruct --gpus 8   # memory plan, before renting
    python serve.py --model DIR --port 8000     # OpenAI-compatible /v1/chat/completions on this engine

Read it in this order:
  1. Budget forcing (the paper's method, paper §3.1): a small state machine per row, `advance`:
     - the prompt ends in "<|im_start|>think"; every token after it is a thinking token until the
       model emits the end-of-thinking delimiter <|im_start|> (or <|im_end|>, or <|endoftext|>);
     - cap: once a row has max_thinking_tokens thinking tokens, force "<|im_start|>answer\\nFinal Answer:",
       after a "\\n" unless the thinking already ends in one (as s1's harness does);
     - extend: when the row emits the delimiter with ignores left, drop it and force "Wait" instead
       (or nothing, with an empty ignore string); the first token of every thinking round may not be
       the delimiter (the harness's min_tokens=1); the forced "Wait" counts as thinking and the
       dropped delimiter does not, as in the harness's final cut, but the budget is spent as the
       rounds run (the harness lets every round run to the full budget and cuts the total after);
     - a natural stop keeps the model's <|im_start|> and forces "answer"; the answer runs to <|im_end|>.
  2. The paged KV cache: one pool of fixed-size blocks per layer; a sequence holds a list of block
     ids (its block table) and gets a block each time it fills one; blocks are reference-counted so
     that sequences can share a prefix, and a shared block is copied before it is written.
  3. The engine: a scheduler that admits waiting prompts whenever slots and blocks are free, a step
     that runs one forward for every running sequence, and preemption (free the newest sequence's
     blocks, recompute it later) when the pool runs out.
  4. Sharing (fork): the rows of one question (its samples, its budget-forcing settings) start as
     one sequence and split only where they would feed different tokens. A cap forks at its
     position; "Wait" forks at a natural end. A whole Figure 1 sweep costs about its longest setting.
  5. generate(): questions in, one result per (question, sample, setting) out.
"""
import argparse
import datetime
import inspect
import json
import os
import re
import sys
import weakref
import zlib
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

import chat
import cli
import hf_checkpoint as hf
import jsonl
import model as qwen

# The paged decode kernels, which read the block tables themselves (CUDA, fp16/bf16): torch's own
# varlen_attn in its block_table=/seqused_k= form (torch 2.13; older torch lacks it), else flash-attn's
# flash_attn_with_kvcache if installed; without either, decoding gathers the blocks for SDPA.
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

# Suffixes of the paper's conditional-control baselines (paper §5.4, Table 3), appended to the question.
CONTROL = {
    "tokens": "\n\nThink for up to {} tokens.",
    "steps": "\n\nThink for up to {} steps.",
    "long": "\n\nAnswer after a long amount of thinking. If you feel like you are finished early, spend the extra "
            "time trying to double-check your work until you are absolutely sure that you have the correct answer.",
    "short": "\n\nAnswer after a short amount of thinking. Do not spend excessive time double-checking your work.",
}


def control_prompt(question, kind=None, value=None):
    return question if kind is None else question + CONTROL[kind].format(value)


# ----------------------------------------------------------------------------------------------
# 1. Budget forcing

@dataclass(eq=False)
class Row:
    """One generation: a question under one budget-forcing setting, one sample of it."""
    prompt_len: int
    max_len: int                # prompt + generated tokens at most (the context)
    ids: dict                   # special_ids(): the delimiters and forced texts, as token ids
    cap: int | None             # most thinking tokens (None: no cap)
    ignores_left: int           # end-of-thinking delimiters still to replace by "Wait"
    round_start: bool = False   # the next sampled token opens a thinking round: it may not end it
    phase: str = "think"        # think -> answer -> done
    forced: deque = field(default_factory=deque)  # tokens to feed before sampling again
    tokens: list = field(default_factory=list)    # everything fed after the prompt
    thinking_tokens: int = 0
    answer_start: int | None = None  # index in tokens where the answer text begins (after its header)
    ended: str = ""             # how thinking ended: natural | capped | length (none: think=False)
    events: list = field(default_factory=list)    # what budget forcing did, and when
    finished: bool = False      # the answer was closed by <|im_end|>
    temperature: float = 0.0    # 0: greedy
    top_p: float = 1.0
    seed: int = 0               # its random draw at position t depends on (seed, t) only
    index: int = 0              # where its result goes

    def __post_init__(self):
        # s1's harness runs every thinking round with min_tokens=1 when it ignores the end of
        # thinking (vllm_causallms.py l. 273-280), the first round included.
        self.round_start = self.round_start or (self.phase == "think" and self.ignores_left > 0)


_newline_cache = weakref.WeakKeyDictionary()  # per tokenizer object: two tokenizers never share an entry


def tokens_ending_in_newline(tokenizer):
    """Ids whose text ends in "\\n" (2,178 of Qwen2.5's 151,665, e.g. ".\\n\\n"): where the thinking
    already ends in a newline, the cap adds none. Decoding the vocabulary takes 1-3 s, so once."""
    if tokenizer not in _newline_cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _newline_cache[tokenizer] = frozenset(i for i, t in enumerate(texts) if t.endswith("\n"))
    return _newline_cache[tokenizer]


def special_ids(tokenizer, ignore_str):
    """The budget-forcing strings as token ids. ignore_str "" is s1's "no string" ablation: the
    delimiter is suppressed and nothing is appended."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    # An added token, special or not: s1's train/sft.py made <|fim_pad|> the pad token, so a saved
    # s1 tokenizer no longer lists <|endoftext|> among its special tokens. A byte tokenizer may lack it.
    eos = [tokenizer.get_added_vocab()[chat.EOS]] if chat.EOS in tokenizer.get_added_vocab() else []
    im_start, im_end = enc(chat.IM_START)[0], enc(chat.IM_END)[0]
    return dict(im_start=im_start, im_end=im_end, eos=eos, stops={im_start, im_end, *eos}, answer=enc("answer"),
                think=enc("think"), final_answer=enc(chat.FINAL_ANSWER), newline=enc("\n"),
                ends_in_newline=tokens_ending_in_newline(tokenizer),
                ignore=enc(ignore_str), ignore_str=ignore_str)


def advance(row, token, sampled, ids):
    """Budget forcing: given the row's next token (sampled by the model, or popped from its forced
    queue), return the token to feed, updating the row's phase, counts and forced queue. None means
    the delimiter was dropped with nothing to say instead: draw again, without the delimiter."""
    if row.phase == "think":
        row.round_start = row.round_start and not sampled
        if sampled and token in ids["stops"]:  # the model ends its thinking
            # vLLM returns a stop id among the tokens and the harness strips only <|im_start|> and
            # <|im_end|> (vllm_causallms.py l. 362, 397), so an <|endoftext|> stays in the context.
            kept = [token] if token in ids["eos"] else []
            if row.ignores_left > 0:  # suppress the delimiter, think on: "Wait"
                row.ignores_left -= 1
                row.round_start = True
                row.events.append({"at": row.thinking_tokens, "what": ids["ignore_str"]})
                row.forced.extend(kept + ids["ignore"])
                if not row.forced:
                    return None
                token = row.forced.popleft()
            else:  # natural end: keep <|im_start|> (even if the model said <|im_end|>), force "answer"
                row.phase, row.ended = "answer", "natural"
                row.forced.extend(kept + [ids["im_start"]] + ids["answer"])
                return row.forced.popleft()
        row.thinking_tokens += 1
        if row.cap is not None and row.thinking_tokens >= row.cap:  # out of budget: answer now
            row.phase, row.ended = "answer", "capped"
            newline = [] if token in ids["ends_in_newline"] else ids["newline"]
            row.forced = deque(newline + ids["final_answer"])
            row.events.append({"at": row.thinking_tokens, "what": "\n" * bool(newline) + chat.FINAL_ANSWER})
        return token
    if row.answer_start is None and sampled:  # the first token the model writes after the header
        row.answer_start = len(row.tokens)
    if sampled and (token == ids["im_end"] or token in ids["eos"]):
        row.phase, row.finished = "done", True
    return token


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
    s1's README reports vLLM crashing on them at temperature 1. banned: per row, ids it may not draw.
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
    return "varlen_attn" if paged_varlen_attn else "flash_attn_with_kvcache" if flash_attn_with_kvcache else None


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
        self.positions = torch.tensor(positions, device=device).view((len(seqs), 1) if self.decode else (1, -1))
        # index of each sequence's last new token among all new tokens: its logits are the ones kept
        self.last = torch.tensor(ends, device=device).sub(torch.tensor(starts, device=device)).cumsum(0) - 1
        self.lengths = torch.tensor(ends, device=device, dtype=torch.int32)
        self.max_len = max(ends)  # a Python int: the kernels take it as such
        cumulative = lambda xs: torch.tensor([0, *xs], device=device).cumsum(0).to(torch.int32)
        self.kernel = paged_kernel(pool.k, bs) if self.decode else None
        if not self.decode:
            self.cu_seqlens = cumulative(ends)
        elif self.kernel:  # one query per sequence, over the first `lengths` slots of its block table
            self.cu_q, self.cu_k = cumulative([1] * len(seqs)), cumulative(ends)
        else:  # gather + SDPA: sequences of one length together, so that no padding needs a mask
            by_length = {}
            for i, n in enumerate(ends):
                by_length.setdefault(n, []).append(i)
            self.groups = []
            for n, rows in by_length.items():
                pos, rows = torch.arange(n, device=device), torch.tensor(rows, device=device)
                self.groups.append((rows, self.tables[rows][:, pos // bs].long() * bs + pos % bs))

    def attend(self, layer, q, k, v):
        """Store this layer's new k, v in their slots, then attend: (B, T, heads, head_dim) in and out."""
        H, D = k.shape[-2:]
        k_pool, v_pool = self.pool.k[layer], self.pool.v[layer]
        k_pool.view(-1, H, D)[self.slots] = k.reshape(-1, H, D)
        v_pool.view(-1, H, D)[self.slots] = v.reshape(-1, H, D)
        if not self.decode:
            return qwen.packed_attention(q[0], k[0], v[0], self.cu_seqlens, self.max_len)[None]
        if self.kernel == "varlen_attn":
            return paged_varlen_attn(q[:, 0], k_pool, v_pool, self.cu_q, self.cu_k, 1, self.max_len, enable_gqa=True,
                                     seqused_k=self.lengths, block_table=self.tables)[:, None]
        if self.kernel == "flash_attn_with_kvcache":
            return flash_attn_with_kvcache(q, k_pool, v_pool, cache_seqlens=self.lengths, block_table=self.tables,
                                           causal=True)
        # SDPA with no mask, per group of rows of one length. With a mask and GQA heads, CUDA's flash
        # kernel (no mask) and efficient kernel (no GQA) both refuse the call, which leaves cuDNN or
        # the math kernel, and math copies K and V to every query head: GBs per layer at 64 x 32K.
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
    request: object = None


@dataclass(eq=False)
class Request:
    """A prompt given to add(). With keep_prompt, its prefilled blocks and last logits are kept
    until close(), so that more rows can start from them later (rejection sampling's retries)."""
    prompt: list
    keep_prompt: bool = False
    blocks: list | None = None
    logits: torch.Tensor | None = None


def kv_bytes_per_token(cfg, kv_heads, dtype):
    return 2 * cfg.num_hidden_layers * kv_heads * cfg.head_dim * torch.finfo(dtype).bits // 8


class Engine:
    """Continuous batching on a paged KV cache. add() queues a prompt with its rows; every step()
    runs one forward and returns the rows that finished."""

    def __init__(self, model, max_tokens, max_rows=64, vocab_size=None, kv_memory_gb=None, block_size=None,
                 on_token=None):
        """max_tokens: the longest sequence (prompt + generated) a row may reach; the pool holds at
        least one. max_rows: most sequences admitted at once. on_token(row) after each token."""
        self.model, self.max_tokens, self.max_rows, self.on_token = model, max_tokens, max_rows, on_token
        self.vocab_size = vocab_size or model.cfg.vocab_size
        self.device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
        paged = paged_kernel(model.lm_head.weight, PAGED_BLOCK)  # their rule; without them, small blocks waste less
        block_size = block_size or (PAGED_BLOCK if paged else 16)
        kv_heads = model.model.layers[0].self_attn.n_kv_heads  # this rank's share under tensor parallelism
        per_block = block_size * kv_bytes_per_token(model.cfg, kv_heads, dtype)
        if kv_memory_gb is not None:
            budget = kv_memory_gb * 1e9
        elif self.device.type == "cuda":  # what the weights left, less room for one step's activations
            torch.cuda.empty_cache()  # memory an earlier engine's pool left in PyTorch's cache counts as free
            tp = dist.get_world_size() if dist.is_initialized() else 1
            budget = 0.9 * torch.cuda.mem_get_info(self.device)[0] - activation_bytes(model.cfg, max_tokens, max_rows, tp)
        else:  # CPU: every row at full context, at most 4 GB
            budget = min(4e9, max_rows * -(-max_tokens // block_size) * per_block)
        num_blocks = int(budget // per_block)
        if dist.is_initialized():  # every rank must schedule alike: the smallest pool wins
            n = torch.tensor(num_blocks, device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(n, op=dist.ReduceOp.MIN)
            num_blocks = int(n)
        if num_blocks < -(-max_tokens // block_size):
            raise ValueError(f"the KV pool holds {num_blocks * block_size} tokens, less than one row of "
                             f"max_tokens={max_tokens}: give more kv_memory_gb (one token takes "
                             f"{per_block / block_size / 1e6:.3f} MB) or fewer max_tokens")
        self.pool = BlockPool(model.cfg, num_blocks, block_size, kv_heads, self.device, dtype)
        self.prefill_tokens = max(max_tokens, 8192)  # most prompt tokens in one prefill forward
        self.waiting, self.running, self.ready = deque(), [], []
        self.kept = []  # requests whose prompt blocks are kept for more rows (rejection sampling)
        self.fed = self.steps = self.preempted = self.forks = 0  # statistics

    def add(self, prompt, rows, keep_prompt=False):
        request = Request(list(prompt), keep_prompt)
        self.waiting.append(Seq(list(prompt), rows, request=request))
        return request

    def extend(self, request, rows):
        """Start more rows from a kept prompt: no prefill, they sample from its stored logits (or,
        if the pool took the prompt's blocks back, it is prefilled again)."""
        if request.blocks is None:
            self.waiting.append(Seq(list(request.prompt), rows, request=request))
            return
        self.pool.share(request.blocks)
        self.ready.append(Seq(list(request.prompt), rows, list(request.blocks), len(request.prompt), request))

    def close(self, request):
        if request.blocks:
            self.pool.release(request.blocks)
            self.kept.remove(request)
        request.blocks = request.logits = None

    def busy(self):
        return bool(self.waiting or self.running or self.ready)

    def cancel(self, rows):
        """Drop rows (their client left, or a stop string matched); free what only they held."""
        rows = set(map(id, rows))
        for queue in (self.running, self.waiting, self.ready):
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
        while self.waiting and (rows + len(self.waiting[0].rows) <= self.max_rows or not self.running + batch):
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
        if seq.cached == len(seq.blocks) * self.pool.block_size:  # its blocks are full: take a new one
            if not self.pool.free:
                return False
            seq.blocks.append(self.pool.allocate())
        elif self.pool.refs[seq.blocks[-1]] > 1:  # its last block is shared with a fork: copy, then write
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
        return list(self.running)  # a copy: forks and finished sequences change the list during the step

    # -- the step

    def step(self):
        """One forward: a prefill of newly admitted sequences if any fit, else one decoded token for
        every running sequence. Returns the rows that finished."""
        finished = []
        if self.ready:  # rows started from a kept prompt sample from its stored logits
            seqs, self.ready = self.ready, []
            self.running += seqs
            finished += self.advance_all(seqs, torch.stack([s.request.logits for s in seqs]))
        batch = self.admit() or self.make_room()
        if not batch and self.waiting and not self.running and self.kept:  # kept prompts fill the pool:
            for request in list(self.kept):                                # give them back, recompute later
                self.close(request)
            batch = self.admit()
        if not batch:
            if self.waiting and not self.running:
                raise RuntimeError(f"the KV pool ({len(self.pool.refs)} blocks) cannot hold a waiting sequence")
            return finished
        new = [t for s in batch for t in s.ids[s.cached:]]
        view = PagedBatch(self.pool, batch, self.device)
        input_ids = torch.tensor(new, device=self.device).view(view.positions.shape)
        with torch.no_grad():
            logits = self.model(input_ids, cache=view)
        self.fed, self.steps = self.fed + len(new), self.steps + 1
        for i, seq in enumerate(batch):
            request = seq.request
            if request.keep_prompt and request.blocks is None and len(seq.ids) == len(request.prompt):
                request.blocks, request.logits = list(seq.blocks), logits[i].clone()  # its prompt, just prefilled
                self.pool.share(seq.blocks)
                self.kept.append(request)
            seq.cached = len(seq.ids)
        return finished + self.advance_all(batch, logits)

    def advance_all(self, seqs, logits):
        """Draw, budget-force and append the next token of every row; split each sequence whose
        rows now feed different tokens (a fork); free the blocks of sequences that are done."""
        draws = {}  # (sequence, row seed at this position) -> index of its draw: sweeps draw once
        for i, seq in enumerate(seqs):
            for row in seq.rows:
                if not row.forced:
                    draws.setdefault(self.draw_key(i, row), len(draws))
        if draws:
            keys = list(draws)
            tokens = sample_tokens(logits[[k[0] for k in keys]], [k[2] for k in keys], [k[3] for k in keys],
                                   self.vocab_size, [k[1] for k in keys], [k[4] for k in keys]).tolist()
        finished = []
        for i, seq in enumerate(seqs):
            groups = {}  # rows that feed the same next token stay one sequence; the others fork
            for row in seq.rows:
                if row.prompt_len + len(row.tokens) >= row.max_len:  # out of context
                    row.ended, row.phase = row.ended or "length", "done"
                    finished.append(row)
                    continue
                forced = bool(row.forced)
                token = row.forced.popleft() if forced else tokens[draws[self.draw_key(i, row)]]
                fed = advance(row, token, not forced, row.ids)
                if fed is None:  # the delimiter was dropped with nothing appended: draw again, without it
                    key = self.draw_key(i, row)
                    fed = advance(row, int(sample_tokens(logits[i:i + 1], *key[2:4], self.vocab_size, key[1], [key[4]])),
                                  True, row.ids)
                row.tokens.append(fed)
                self.on_token and self.on_token(row)
                if row.phase == "done":  # <|im_end|> closed the answer: nothing left to feed
                    finished.append(row)
                else:
                    groups.setdefault(row.tokens[-1], []).append(row)
            self.split(seq, list(groups.items()))
        return finished

    def draw_key(self, i, row):
        """What a row's next draw depends on: its sequence's logits, its seed at this position, how
        it samples and what it may not draw. Rows with the same key draw the same token (a sweep
        draws once)."""
        seed = 0 if row.temperature == 0 else (row.seed * 1_000_003 + len(row.tokens)) % 2 ** 63
        banned = tuple(sorted(row.ids["stops"])) if row.round_start and row.phase == "think" else ()
        return i, seed, row.temperature, row.top_p, banned

    def split(self, seq, groups):
        if not groups:  # every row is done
            self.running.remove(seq)
            self.pool.release(seq.blocks)
            return
        for token, rows in groups[1:]:  # a fork shares every block; the first write copies
            child = Seq(seq.ids + [token], rows, list(seq.blocks), seq.cached, seq.request)
            self.pool.share(child.blocks)
            self.running.append(child)
            self.forks += 1
        token, seq.rows = groups[0]
        seq.ids.append(token)


def activation_bytes(cfg, max_tokens, max_rows, tp=1, dtype_bytes=2):
    """Peak memory of one engine forward besides weights and KV: a prefill of up to max(max_tokens,
    8192) tokens (hidden states, q/k/v, the MLP's two intermediate halves and its product, per
    layer, freed layer by layer), or a decode step's gathered keys and values (without a paged
    kernel: every row's slots at most, one layer at a time, with KV heads not repeated: the SDPA
    calls have no mask, so CUDA's flash kernel takes them, never the math kernel, which would
    repeat them to every query head) and sampling: fp32 logits and log-probabilities, and at the
    peak, nucleus's sort (values, int64 order, masks, the scattered result): 9 fp32-sized copies of
    rows x vocab (counted, not measured)."""
    tokens = max(max_tokens, 8192)
    per_token = (4 * cfg.hidden_size + 2 * cfg.hidden_size // tp + 3 * cfg.intermediate_size // tp) * dtype_bytes
    gathered = 2 * max_rows * max_tokens * cfg.num_key_value_heads // tp * cfg.head_dim * dtype_bytes
    return max(tokens * per_token, gathered) + 9 * max_rows * cfg.vocab_size * 4


# ----------------------------------------------------------------------------------------------
# 4. generate: questions in, results out

def answer_span(row):
    """Token range of the answer text: from the first token the model wrote after the answer
    header, without the closing <|im_end|>. (The thinking is tokens[:row.thinking_tokens].)"""
    start = len(row.tokens) if row.answer_start is None else row.answer_start
    return start, len(row.tokens) - row.finished


def own_thinking(row):
    """A plain completion's thinking as s1's eval/compute_sample_stats.py counts it: s1 models write
    "<|im_start|>think ... <|im_start|>answer" unprompted. Its token range, and where the answer
    text starts; (0, 0, 0) when the model wrote no answer header."""
    toks, ids = row.tokens, row.ids
    header, opener = [ids["im_start"]] + ids["answer"], [ids["im_start"]] + ids["think"]
    end = next((i for i in range(len(toks)) if toks[i:i + len(header)] == header), None)
    if end is None:
        return 0, 0, 0
    start = len(opener) if toks[:len(opener)] == opener else 0
    return start, end, end + len(header)


def result(row, tokenizer, prompt, plain=False):
    """What a caller keeps of a finished row. plain: a completion without budget forcing (think=False)."""
    if plain:
        think_start, think_end, start = own_thinking(row)
        end = len(row.tokens) - row.finished
    else:
        think_start, think_end = 0, row.thinking_tokens
        start, end = answer_span(row)
    decode_ = lambda toks: tokenizer.decode(toks, skip_special_tokens=False)
    return {"prompt": prompt, "text": decode_(row.tokens), "thinking": decode_(row.tokens[think_start:think_end]),
            "answer": decode_(row.tokens[start:end]), "thinking_tokens": think_end - think_start,
            "answer_tokens": end - start, "generated_tokens": len(row.tokens), "ended": row.ended or "none",
            "forced": row.events, "finished": row.finished}


def thinking_budget(value, prompt_len, max_tokens, n_forced):
    """A row's thinking cap. "auto" is the harness's: context - prompt - "<|im_start|>answer\\nFinal
    Answer:" - 100 tokens for the answer (vllm_causallms.py l. 262-264; the prompt here already ends
    in <|im_start|>think). Per row: the harness subtracts the longest prompt of the batch."""
    if value is None:
        return None
    if value == "auto":
        return max(1, max_tokens - prompt_len - n_forced - 100)
    return int(value)


def row_seed(seed, question, sample):
    """The seed of a row's draws: the same for every setting of one sample of one question, so
    that rows sharing a prefix draw alike, and independent of batches, order and resumption."""
    return zlib.crc32(f"{seed}/{sample}/{question}".encode())


def encode_prompts(tokenizer, questions, max_tokens, think=True):
    texts = [chat.prompt_text(q) + (chat.completion_text() if think else "") for q in questions]
    prompts = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    for i, p in enumerate(prompts):
        if len(p) >= max_tokens:
            raise ValueError(f"question {i}: the prompt has {len(p)} tokens, the context "
                             f"(max_tokens) {max_tokens}: no room to generate")
    return texts, prompts


def generate(model, tokenizer, questions, max_thinking_tokens=None, num_ignore=0, ignore_str="Wait",
             max_tokens=32768, temperature=0.0, top_p=1.0, seed=0, batch_size=64, progress=True, n=1,
             think=True, stats=None, on_token=None, settings=None, share=True, on_result=None,
             kv_memory_gb=None, block_size=None):
    """Generate for each question (the chat template is applied here). settings, if given, is a
    list of dicts with max_thinking_tokens, num_ignore and optionally ignore_str (a budget-forcing
    sweep); else the one setting of those arguments. Returns one dict per (question, sample, setting), in that order:
    n > 1 is parallel sampling (majority voting). With share (the default) the rows of a question
    are one sequence until they differ; share=False runs each alone (the same tokens, more work).
    think=False runs a plain chat completion without the thinking phase. batch_size: most
    sequences decoded together. on_result(index, result) is called as each row finishes,
    on_token(row) after each token; stats, if a dict, gets the engine's counts (tokens fed, ...)."""
    from tqdm import tqdm
    settings = settings or [dict(max_thinking_tokens=max_thinking_tokens, num_ignore=num_ignore)]
    strings = {s.get("ignore_str", ignore_str) for s in settings}
    ids = {string: special_ids(tokenizer, string) for string in strings}
    ids_of = lambda s: ids[s.get("ignore_str", ignore_str)]
    engine = Engine(model, max_tokens, batch_size, len(tokenizer), kv_memory_gb, block_size, on_token)
    texts, prompts = encode_prompts(tokenizer, questions, max_tokens, think)
    per_question = n * len(settings)
    for q, prompt in enumerate(prompts):
        rows = [Row(prompt_len=len(prompt), max_len=max_tokens, ids=ids_of(s), temperature=temperature, top_p=top_p,
                    ignores_left=s["num_ignore"] if think else 0,
                    cap=thinking_budget(s["max_thinking_tokens"], len(prompt), max_tokens, len(ids_of(s)["final_answer"])),
                    phase="think" if think else "answer", seed=row_seed(seed, questions[q], i),
                    index=q * per_question + i * len(settings) + j)
                for i in range(n) for j, s in enumerate(settings)]
        for group in [rows] if share else [[r] for r in rows]:
            engine.add(prompt, group)
    results = [None] * (len(questions) * per_question)
    bar = tqdm(total=len(results), desc="generate", disable=not progress, leave=False)
    while engine.busy():
        for row in engine.step():
            results[row.index] = result(row, tokenizer, texts[row.index // per_question], plain=not think)
            on_result and on_result(row.index, results[row.index])
            bar.update()
    bar.close()
    if stats is not None:
        for k in ("fed", "steps", "preempted", "forks"):
            stats[k] = stats.get(k, 0) + getattr(engine, k)
    return results


def rejection_sample(model, tokenizer, questions, max_thinking_tokens, max_tries=8, temperature=1.0, seed=0,
                     num_ignore=0, ignore_str="Wait", max_tokens=32768, top_p=1.0, batch_size=64, progress=True,
                     kv_memory_gb=None, on_result=None, stats=None):
    """The paper's rejection-sampling baseline: sample until the thinking ends by itself within
    the budget, at most max_tries times (the harness loops forever). Each result records its tries
    and whether it was accepted; after max_tries the last sample is kept, marked not accepted.
    A question's prompt is prefilled once; each retry starts from its kept blocks."""
    if not isinstance(max_thinking_tokens, int):
        raise ValueError(f"rejection sampling needs an integer thinking budget, not {max_thinking_tokens!r}")
    ids = special_ids(tokenizer, ignore_str)
    engine = Engine(model, max_tokens, batch_size, len(tokenizer), kv_memory_gb)
    texts, prompts = encode_prompts(tokenizer, questions, max_tokens)
    new_row = lambda q, attempt: Row(prompt_len=len(prompts[q]), max_len=max_tokens, ids=ids, temperature=temperature,
                                     top_p=top_p, cap=max_thinking_tokens + 1, ignores_left=num_ignore,
                                     seed=row_seed(seed, questions[q], f"try{attempt}"), index=q)
    requests = [engine.add(p, [new_row(q, 0)], keep_prompt=True) for q, p in enumerate(prompts)]
    final, tries = [None] * len(questions), [1] * len(questions)
    from tqdm import tqdm
    bar = tqdm(total=len(questions), desc="rejection sampling", disable=not progress, leave=False)
    while engine.busy():
        for row in engine.step():
            q = row.index
            out = final[q] = result(row, tokenizer, texts[q])
            # the harness accepts at most B tokens counting the delimiter it stopped on (l. 299)
            accepted = out["ended"] == "natural" and out["thinking_tokens"] + 1 <= max_thinking_tokens
            out.update(tries=tries[q], accepted=accepted)
            if out["accepted"] or tries[q] == max_tries:
                engine.close(requests[q])
                on_result and on_result(q, out)
                bar.update()
            else:
                engine.extend(requests[q], [new_row(q, tries[q])])
                tries[q] += 1
    bar.close()
    if stats is not None:
        stats["fed"] = stats.get("fed", 0) + engine.fed
    return final


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


def load_model(name_or_path, device, dtype, world=1, rank=0):
    path = hf.checkpoint_dir(name_or_path)  # resolved (and fetched, once per node) before any weight is read
    if world > 1:
        kv_heads = hf.read_config(os.path.join(path, "config.json")).num_key_value_heads
        if kv_heads % world:
            raise SystemExit(f"--model has {kv_heads} KV heads: the number of processes ({world}) must divide it")
    select = tensor_parallel_slice(rank, world) if world > 1 else None
    model = hf.from_pretrained(path, device=device, dtype=dtype, select=select)
    if world > 1:
        for block in model.model.layers:
            block.self_attn.n_heads //= world
            block.self_attn.n_kv_heads //= world
            # each rank holds a partial sum of the block's output: add them up
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                proj.register_forward_hook(lambda mod, inp, out: dist.all_reduce(out) or out)
    return model.eval()


def init_distributed(device="auto", timeout_min=60):
    """(device, world, rank): under torchrun, one process per GPU (or gloo on CPU), every rank
    running the same engine on its slice of the model. Used by every script that generates.
    device: --device, checked first (cli.device: a GPU node whose torch cannot use the GPU stops
    here). timeout_min bounds every collective; torch's default, 10 minutes, is less than the other
    ranks may wait while rank 0 grades, or reads weights from a slow disk."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = cli.device(device) if isinstance(device, str) else device
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_min))
    return device, world, rank


def broadcast(obj):
    """Rank 0's value of obj on every rank (what is left to do must be the same everywhere)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------------------------
# Memory plan: will it fit, before any weight is loaded

def memory_plan(cfg, tp, max_tokens, rows, gpu_gib, dtype_bytes=2):
    """Bytes per GPU: weights (blocks split tp ways; embedding, LM head and norms whole on every
    rank), the CUDA context and NCCL buffers, one forward's activations, and the KV pool that the
    engine makes of 90 % of what is left; and how many full-context rows that pool holds."""
    h, kv_dim = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    block = 2 * h * h + 2 * h * kv_dim + h + 2 * kv_dim + 3 * h * cfg.intermediate_size + 2 * h
    whole = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2) + h
    plan = {"weights": (cfg.num_hidden_layers * block / tp + whole) * dtype_bytes,
            "cuda context and NCCL": (1.0 if tp > 1 else 0.5) * 1e9,
            "activations": activation_bytes(cfg, max_tokens, rows, tp, dtype_bytes)}
    per_token = 2 * cfg.num_hidden_layers * (cfg.num_key_value_heads // tp) * cfg.head_dim * dtype_bytes
    plan["KV pool"] = max(0.0, 0.9 * (gpu_gib * 1024 ** 3 - plan["weights"] - plan["cuda context and NCCL"]) - plan["activations"])
    plan["rows that fit"] = int(plan["KV pool"] // (per_token * max_tokens))
    plan["kv per token"] = per_token
    return plan


def print_plan(name, gpus, max_tokens, rows, gpu_gib):
    """The plan for every tensor-parallel degree that divides the KV heads, up to --gpus; returns
    the smallest degree at which one full-context row fits (None if none does)."""
    cfg = hf.plan_config(name)
    print(f"Memory plan for {name}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_key_value_heads} KV heads; context {max_tokens:,} tokens, up to {rows} rows; "
          f"{gpu_gib:g} GiB per GPU; bf16")
    print("| tensor parallel | weights | activations | context+NCCL | KV pool | KV per token | "
          f"{max_tokens // 1024}K rows that fit | rows at once |\n|---|---|---|---|---|---|---|---|")
    fits = {}
    for tp in [t for t in (1, 2, 4, 8, 16) if t <= gpus and cfg.num_key_value_heads % t == 0]:
        p = memory_plan(cfg, tp, max_tokens, rows, gpu_gib)
        gb = lambda x: f"{x / 1024 ** 3:.1f} GiB"
        print(f"| {tp} | {gb(p['weights'])} | {gb(p['activations'])} | {gb(p['cuda context and NCCL'])} | "
              f"{gb(p['KV pool'])} | {p['kv per token'] / 1e3:.0f} KB | {p['rows that fit']} | "
              f"{min(rows, p['rows that fit'])} |")
        if p["rows that fit"] >= 1:
            fits[tp] = p["rows that fit"]
    if not fits:
        print(f"Does not fit: no tensor-parallel degree up to {gpus} GPUs holds the weights and one "
              f"{max_tokens:,}-token row. Use more GPUs, larger ones, or a shorter --max-tokens.")
        return None
    best, most = min(fits), max(fits)
    print(f"Smallest fit: torchrun --nproc-per-node {best} ({fits[best]} full-context rows at once). "
          f"Most rows: --nproc-per-node {most} ({fits[most]}); the degree must divide the "
          f"{cfg.num_key_value_heads} KV heads" + (f", so {gpus} GPUs run {gpus // most} such jobs side by side "
                                                   f"(e.g. one benchmark each, each with its own --out)."
                                                   if gpus // most > 1 else "."))
    return best


# ----------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="simplescaling/s1.1-32B", help="hub name or local checkpoint directory")
    p.add_argument("--tokenizer", default=None, help="default: the model's")
    p.add_argument("--prompt", help="one question, printed with its thinking and answer")
    p.add_argument("--input", help="JSONL with a 'question' (and optionally 'id') per line")
    p.add_argument("--output", help="JSONL of samples; rows already in it are skipped (resume)")
    p.add_argument("--max-thinking-tokens", type=cli.budget, default=None, help="cap on thinking tokens: an integer or 'auto'")
    p.add_argument("--num-ignore", type=cli.at_least(0), default=0, help="times to replace the end of thinking by --ignore-str")
    p.add_argument("--ignore-str", default="Wait",
                   help='s1 ablated "Hmm", "Alternatively" and "" (suppress the end of thinking, append nothing)')
    p.add_argument("--max-tokens", type=cli.at_least(2), default=32768, help="context: prompt + thinking + answer")
    p.add_argument("--temperature", type=cli.at_least(0, float), default=0.0, help="0 = greedy (s1's evaluation)")
    p.add_argument("--top-p", type=cli.between(1e-9, 1), default=1.0)
    p.add_argument("--seed", type=cli.at_least(0), default=0)
    p.add_argument("--n", type=cli.at_least(1), default=1, help="samples per question (parallel sampling, majority voting)")
    p.add_argument("--batch-size", type=cli.at_least(1), default=64, help="most sequences decoded together")
    p.add_argument("--kv-memory-gb", type=cli.above(0), default=None,
                   help="KV pool size; default: 90%% of what the weights leave free on GPU, on CPU enough "
                        "for --batch-size full-context rows up to 4 GB")
    p.add_argument("--control", choices=sorted(CONTROL), help="conditional-control prompt (paper §5.4 baselines)")
    p.add_argument("--control-value", type=cli.at_least(1), help="N for --control tokens/steps")
    p.add_argument("--rejection-sampling", action="store_true", help="resample until thinking ends within the cap")
    p.add_argument("--max-tries", type=cli.at_least(1), default=8, help="--rejection-sampling: attempts per question")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--dist-timeout-min", type=cli.above(0), default=60,
                   help="torchrun: collective timeout (torch's default, 10 min, is less than loading 32B may take)")
    p.add_argument("--dry-run", action="store_true", help="print the memory plan per GPU and exit (no weights loaded)")
    p.add_argument("--gpus", type=cli.at_least(1), default=8, help="--dry-run: GPUs to plan for")
    p.add_argument("--gpu-memory-gib", type=cli.above(0), default=79.1,
                   help="--dry-run: memory per GPU; an \"80 GB\" H100 has 85.0e9 bytes, of which torch reports 79.1 GiB")
    args = p.parse_args(argv)
    if args.dry_run:
        return args
    if sum(x is not None for x in (args.prompt, args.input)) != 1:
        p.error("give exactly one of --prompt, --input (with --output) or --dry-run (serve.py serves)")
    if args.input and not args.output:
        p.error("--input needs --output")
    if args.rejection_sampling and (not isinstance(args.max_thinking_tokens, int) or args.temperature <= 0):
        p.error("--rejection-sampling needs an integer --max-thinking-tokens and --temperature > 0 "
                "(greedy retries would all be the same)")
    if args.control in ("tokens", "steps") and args.control_value is None:
        p.error(f"--control {args.control} needs --control-value")
    return args


# What shapes the samples in an --output: a rerun into it must use the same (its .config.json).
SETTINGS = ("model", "tokenizer", "dtype", "max_thinking_tokens", "num_ignore", "ignore_str", "max_tokens", "temperature",
            "top_p", "seed", "n", "control", "control_value", "rejection_sampling", "max_tries")


def read_questions(path):
    rows = []
    for n, row in jsonl.numbered(path):
        if not isinstance(row.get("question"), str):
            raise SystemExit(f"{path} line {n}: needs a string 'question'")
        rows.append(dict(row, id=row.get("id", n - 1)))
    if not rows:
        raise SystemExit(f"{path}: no questions (the file is empty or blank)")
    return rows


def finished_ids(path):
    """Ids already in an output file. A torn last line (a crash mid-write) is dropped and cut from the
    file; an unreadable line anywhere else is an error, and nothing is rewritten (jsonl.py)."""
    return {r["id"] for r in jsonl.resume(path)}


def check_fits(name, device, world, max_tokens, rows):
    """On a GPU, stop before loading weights if they and one full-context row cannot fit."""
    if device.type != "cuda":
        return
    cfg = hf.plan_config(name)
    plan = memory_plan(cfg, world, max_tokens, rows, torch.cuda.get_device_properties(device).total_memory / 1024 ** 3)
    if plan["rows that fit"] < 1:
        raise SystemExit(f"{name} does not fit {world} GPU(s) with one {max_tokens:,}-token row "
                         f"(weights {plan['weights'] / 1024 ** 3:.1f} GiB per GPU): run under torchrun with more "
                         f"GPUs (sample.py --dry-run shows the plan) or lower --max-tokens")


def resolve_dtype(dtype, device):
    """The dtype's name, "auto" resolved: bfloat16 on a GPU, float32 on a CPU. device: "auto", "cuda",
    "cpu" or a torch.device. The CLIs store the resolved name beside their outputs, so that a rerun on
    another device cannot mix precisions."""
    if dtype != "auto":
        return dtype
    kind = getattr(device, "type", None) or cli.device(device).type  # the GPU preflight, before anything is written
    return "bfloat16" if kind == "cuda" else "float32"


def load_for_generation(name, device="auto", dtype="auto", max_tokens=32768, rows=64, tokenizer=None,
                        timeout_min=60):
    """(model, tokenizer, world, rank) for every script that generates: under torchrun, this rank's
    tensor-parallel slice; checked to fit before any weight is loaded. dtype "auto": bf16 on a GPU,
    fp32 on a CPU. timeout_min: --dist-timeout-min (init_distributed)."""
    device, world, rank = init_distributed(device, timeout_min)
    dtype = getattr(torch, resolve_dtype(dtype, device))
    check_fits(name, device, world, max_tokens, rows)
    model = load_model(name, device, dtype, world, rank)
    return model, chat.load_tokenizer(tokenizer or model.source_dir), world, rank


def main(args):
    if args.dry_run:
        print_plan(args.model, args.gpus, args.max_tokens, args.batch_size, args.gpu_memory_gib)
        return
    rows = [{"question": args.prompt}] if args.prompt else read_questions(args.input)  # bad input before weights
    if args.input:
        # An --output is resumed; rows made with other settings must not be mixed into it.
        args.dtype = resolve_dtype(args.dtype, args.device)
        config = {k: getattr(args, k) for k in SETTINGS}
        config_path = re.sub(r"\.jsonl$", "", args.output) + ".config.json"
        jsonl.same_settings(config_path, config, f"use another --output than {args.output}")
    model, tokenizer, world, rank = load_for_generation(args.model, args.device, args.dtype, args.max_tokens,
                                                        args.batch_size, args.tokenizer, args.dist_timeout_min)
    prompt_of = lambda q: control_prompt(q, args.control, args.control_value)
    try:  # a prompt that leaves no room to generate is named before anything runs
        encode_prompts(tokenizer, [prompt_of(r["question"]) for r in rows], args.max_tokens)
    except ValueError as e:
        raise SystemExit(f"{args.input or '--prompt'}: {e}; raise --max-tokens") from None
    kw = dict(max_thinking_tokens=args.max_thinking_tokens, num_ignore=args.num_ignore, ignore_str=args.ignore_str,
              max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
              batch_size=args.batch_size, progress=rank == 0, kv_memory_gb=args.kv_memory_gb)
    run = lambda qs, on_result=None: (
        rejection_sample(model, tokenizer, qs, max_tries=args.max_tries, on_result=on_result, **kw)
        if args.rejection_sampling else generate(model, tokenizer, qs, n=args.n, on_result=on_result, **kw))

    if args.prompt:
        for out in run([prompt_of(args.prompt)]):
            if rank == 0:
                print(f"--- thinking ({out['thinking_tokens']} tokens, ended {out['ended']}; forced: "
                      f"{[e['what'] for e in out['forced']]})\n{out['thinking']}")
                print(f"--- answer ({out['answer_tokens']} tokens)\n{out['answer']}")
    else:
        if rank == 0:
            jsonl.write_atomic(config_path, json.dumps(config, indent=1) + "\n")
        done = broadcast(finished_ids(args.output) if rank == 0 else None)  # every rank runs the same rows
        todo = [r for r in rows if r["id"] not in done]
        print(f"{len(rows)} questions, {len(done)} already in {args.output}, {len(todo)} to go", file=sys.stderr)
        per = 1 if args.rejection_sampling else args.n
        waiting = {}  # a question's samples are written together, as soon as the last one finishes
        with open(args.output, "a") as f:
            def write(index, out):
                q, i = divmod(index, per)
                waiting.setdefault(q, {})[i] = out
                if len(waiting[q]) == per and rank == 0:
                    f.writelines(json.dumps(dict(todo[q], sample=i, **o)) + "\n" for i, o in sorted(waiting.pop(q).items()))
                    f.flush()
            run([prompt_of(r["question"]) for r in todo], write)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    cli.main(lambda: main(parse_args()))
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # gloo can abort at interpreter exit (a known flake of process-group teardown)
