"""Qwen2.5, written out by hand: the architecture and its loss. Loading and saving Hugging Face
checkpoints (config.json, safetensors, the hub) is hf_checkpoint.py's.

Qwen2 is a pre-norm decoder-only transformer:
    tokens -> embedding -> N x [RMSNorm -> GQA attention with rotary positions -> +residual
                                RMSNorm -> SwiGLU MLP -> +residual] -> RMSNorm -> LM head -> logits
Attention has biases on q, k and v (none on the output projection); the MLP and LM head have none.
The small sizes (0.5B-3B) tie the LM head to the embedding; 7B and up do not.
tests/test_model.py checks that this file computes the same function as transformers'
Qwen2ForCausalLM (float32 logits within 1e-5).

Ways to call it (model = hf_checkpoint.from_pretrained(name_or_dir), or Qwen2(Config(...))):
    model(ids)                          each row is one document (causal attention, SDPA)
    model(ids, position_ids=pos)        packed sequences (train.py --pack): a position that
                                        restarts at 0 starts a new document, and no token attends
                                        across documents (packed_attention: a varlen kernel on
                                        an Ampere or newer GPU, else SDPA per document)
    model(ids, labels=labels)           per-token training loss, without full fp32 logits
    model(ids, cache=batch)             decoding: engine.py's paged KV cache says where each new
                                        token sits (batch.positions), stores k and v and attends
                                        (batch.attend, which picks the decode kernel); returns the
                                        logits of each sequence's last new token (batch.last
                                        indexes the flattened new tokens)
"""
import functools
import inspect
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# PyTorch's own varlen flash kernel (CUDA only; torch >= 2.10): the first choice, nothing to install
try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

# optional: flash-attn's varlen kernel, for a torch without varlen_attn (docs/gpu.md)
try:
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None

IGNORE = -100  # label value that carries no loss (the PyTorch / transformers convention)


# ----------------------------------------------------------------------------------------------
# Config: the fields of a checkpoint's config.json that the architecture needs

@dataclass
class Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    torch_dtype: str = "bfloat16"
    bos_token_id: int | None = 151643
    eos_token_id: int | list | None = 151645

    def __post_init__(self):
        """A size the architecture cannot run is a ValueError naming the field, here rather than as
        a shape mismatch deep in a forward pass (hf_checkpoint.read_config adds the file's name)."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.head_dim % 2:  # rotary positions rotate pairs of a head's channels
            raise ValueError(f"hidden_size / num_attention_heads = {self.head_dim} must be even "
                             f"(rotary positions pair a head's channels): hidden_size "
                             f"{self.hidden_size}, num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads} "
                             f"(grouped-query attention)")
        if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(f"rms_norm_eps and rope_theta must be positive, got "
                             f"{self.rms_norm_eps}, {self.rope_theta}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads


# ----------------------------------------------------------------------------------------------
# The building blocks

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # As transformers does: normalise in fp32, cast back, then scale. In bf16 the order matters.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(position_ids, head_dim, theta, dtype):
    """cos and sin of the rotary angles, shape (B, T, 1, head_dim).
    Angles are computed in fp32, with the inverse frequencies computed on the CPU as transformers
    does (the CUDA pow differs in the last bit), and only then cast to the activation dtype."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = position_ids.float()[..., None] * inv_freq.to(position_ids.device)
    angles = torch.cat([angles, angles], dim=-1)[:, :, None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE (the transformers/Qwen convention: pairs are (i, i + head_dim/2))."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def flash_kernels_run(t):
    """Whether the flash kernels (torch's varlen_attn, flash-attn) take tensor t: CUDA, fp16/bf16
    (their only dtypes), on a GPU of compute capability 8.0 or newer. Tests replace it to run the
    kernels' call conventions on a CPU."""
    return (t.is_cuda and t.dtype in (torch.float16, torch.bfloat16)
            and ampere_or_newer(t.device.index))


@functools.cache
def ampere_or_newer(index):
    """Whether CUDA device `index` (None: the current one) has compute capability 8.0 or newer.
    The flash kernels stop on an older GPU (T4 7.5, V100 7.0): "FlashAttention only supports Ampere
    GPUs or newer". There attention runs on SDPA, and this says so once per device."""
    major, minor = torch.cuda.get_device_capability(index)
    if major < 8:
        print(f"note: {torch.cuda.get_device_name(index)} has compute capability {major}.{minor}; "
              "the flash kernels need 8.0 (Ampere) or newer, so attention runs on SDPA "
              "(packed rows one document at a time, decoding by gathering the KV blocks)",
              file=sys.stderr, flush=True)
    return major >= 8


@functools.cache
def causal_keywords(varlen):
    """varlen_attn's keywords for causal attention with grouped-query heads, read once from its
    signature: window (-1, 0), every earlier token and none later (torch 2.12 and newer), or
    is_causal=True (torch 2.10-2.11). Deciding by signature, not by retrying on a TypeError, keeps
    a TypeError raised inside the kernel the error it is."""
    params = inspect.signature(varlen).parameters
    causal = dict(window_size=(-1, 0)) if "window_size" in params else dict(is_causal=True)
    return causal | (dict(enable_gqa=True) if "enable_gqa" in params else {})


def packed_attention(q, k, v, cu_seqlens, max_seqlen):
    """Causal attention inside each document of packed tokens (train.py's packed micro-batches, and
    the prefills of engine.py's KV cache). q: (N, Hq, D), k and v: (N, Hkv, D) for N flattened
    tokens; document i is tokens [cu_seqlens[i], cu_seqlens[i+1]) (int32); max_seqlen, a Python
    int (a tensor would cost a host sync). The kernel: a varlen flash kernel on CUDA in fp16/bf16
    on compute capability 8.0 or newer (PyTorch's, else flash-attn's if installed), else SDPA per
    document."""
    if flash_kernels_run(q):
        if varlen_attn is not None:
            return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                               **causal_keywords(varlen_attn))
        if flash_attn_varlen_func is not None:
            return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                          causal=True)
    # SDPA one document at a time: exact, and the cost is in the matmuls, not the Python loop. The
    # batch dimension of 1 matters: SDPA takes its fast (flash) CPU kernel only for 4-D inputs.
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        doc = lambda t: t[start:end].transpose(0, 1)[None]  # (1, H, T_doc, D)
        out[start:end] = F.scaled_dot_product_attention(doc(q), doc(k), doc(v), is_causal=True,
                                                        enable_gqa=True)[0].transpose(0, 1)
    return out


def document_boundaries(position_ids):
    """cu_seqlens (int32) and the longest document for packed sequences: a document starts at the
    start of every row of position_ids and wherever the position restarts at 0 (the convention of
    torchtitan and of transformers' flash-attention path)."""
    B, T = position_ids.shape
    starts = position_ids.flatten() == 0
    starts[::T] = True
    cu_seqlens = torch.cat([starts.nonzero().flatten(),
                            torch.tensor([B * T], device=position_ids.device)]).to(torch.int32)
    return cu_seqlens, int(cu_seqlens.diff().max())


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, docs=None, cache=None, layer=0):
        B, T, _ = x.shape
        q = apply_rope(self.q_proj(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if cache is not None:  # decoding: the KV cache stores k and v and attends with its kernel
            out = cache.attend(layer, q, k, v)
        elif docs is not None:  # packed sequences: attention stays inside each document
            flat = lambda t: t.reshape(B * T, t.shape[2], self.head_dim)
            out = packed_attention(flat(q), flat(k), flat(v), *docs)
            out = out.view(B, T, self.n_heads, self.head_dim)
        else:  # one document per row; GQA is handled inside SDPA without copying k and v
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), is_causal=True,
                                                 enable_gqa=True).transpose(1, 2)
        return self.o_proj(out.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, docs=None, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, docs, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


# ----------------------------------------------------------------------------------------------
# The model

class Qwen2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        # Named exactly as transformers names them, so checkpoints load key for key.
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(cfg.vocab_size, cfg.hidden_size),
            layers=nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers)),
            norm=RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)))
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Activation checkpointing per block (train.py turns it on): keep only each block's input
        # and recompute its insides in backward. Done here at the call site rather than with a
        # wrapper module so that parameter names stay the transformers ones.
        self.checkpoint_blocks = False

    def forward(self, input_ids, position_ids=None, labels=None, cache=None, ce_chunk=4096):
        """input_ids (B, T). labels (B, T), if given, are the targets of each position (already
        shifted: labels[:, t] is the token after position t; IGNORE carries no loss); the result is
        then the per-position loss (B, T) in fp32, zero where ignored. See the module docstring."""
        B, T = input_ids.shape
        docs = None
        if cache is not None:
            position_ids = cache.positions
        elif position_ids is not None:
            position_ids = position_ids.expand(B, T)  # (1, T) positions may serve the batch
            docs = document_boundaries(position_ids)
        else:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for i, block in enumerate(self.model.layers):
            if self.checkpoint_blocks and torch.is_grad_enabled() and cache is None:
                x = checkpoint(block, x, cos, sin, docs, use_reentrant=False)
            else:
                x = block(x, cos, sin, docs, cache, i)
        x = self.model.norm(x)
        if cache is not None:
            return self.lm_head(x.flatten(0, 1)[cache.last])
        if labels is not None:
            return token_losses(x, self.lm_head.weight, labels, ce_chunk)
        return self.lm_head(x)

    @torch.no_grad()
    def init_weights(self, std=0.02, seed=0):
        """Random init for training from scratch (the demo); transformers' Qwen2 init."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def _chunk_ce(hidden, weight, labels):
    return F.cross_entropy(F.linear(hidden, weight).float(), labels, reduction="none")


def token_losses(hidden, weight, labels, chunk=4096):
    """Per-position cross-entropy of the LM head without materialising the logits.
    Only positions that carry a label are projected, `chunk` at a time, and each chunk runs under
    activation checkpointing: forward keeps just the chunk's hidden states and backward recomputes
    its logits, so peak memory is one chunk of fp32 logits (32K x 152K fp32 logits would be
    20 GB)."""
    keep = labels != IGNORE
    h, y = hidden[keep], labels[keep]
    parts = [checkpoint(_chunk_ce, h[i:i + chunk], weight, y[i:i + chunk], use_reentrant=False)
             for i in range(0, y.numel(), chunk)]
    losses = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
    if not parts:  # nothing to learn here (train.py's idle micro-batch), but under FSDP every
        # rank must produce a gradient for every parameter
        return losses + 0.0 * (hidden.sum() + weight[:1].sum())
    return losses.masked_scatter(keep, torch.cat(parts))


def num_params(model):
    return sum(p.numel() for p in model.parameters())
