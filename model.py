"""Qwen2.5, written out by hand, that loads and saves Hugging Face checkpoints.

Qwen2 is a pre-norm decoder-only transformer:
    tokens -> embedding -> N x [RMSNorm -> GQA attention with rotary positions -> +residual
                                RMSNorm -> SwiGLU MLP -> +residual] -> RMSNorm -> LM head -> logits
Attention has biases on q, k and v (none on the output projection); the MLP and LM head have none.
The small sizes (0.5B-3B) tie the LM head to the embedding; 7B and up do not.
tests/test_model.py checks that this file computes the same function as transformers'
Qwen2ForCausalLM (float32 logits within 1e-5).

Ways to call it:
    model(ids)                          each row is one document (causal attention)
    model(ids, position_ids=pos)        packed rows: a position that restarts at 0 starts a new
                                        document, and no token attends across documents
    model(ids, labels=labels)           per-token training loss, without full fp32 logits
    model(ids, cache=batch)             decoding: sample.py's paged KV cache says where each new
                                        token sits (batch.positions), stores k and v and attends
                                        (batch.attend); returns the logits of each sequence's last
                                        new token (batch.last indexes the flattened new tokens)
"""
import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

try:  # optional: flash-attn's varlen kernel is used for packed rows on CUDA when installed
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None
try:  # PyTorch's own varlen flash kernel (CUDA only); used when flash-attn is missing
    import inspect
    from torch.nn.attention.varlen import varlen_attn
    # torch >= 2.12 spells causal as window_size=(-1, 0) and takes enable_gqa; 2.10-2.11 take is_causal
    _VARLEN_NEW_API = "window_size" in inspect.signature(varlen_attn).parameters
except ImportError:
    varlen_attn = None

IGNORE = -100  # label value that carries no loss (the PyTorch / transformers convention)


# ----------------------------------------------------------------------------------------------
# Config: read from a checkpoint's config.json

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

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads


def read_config(path):
    """Config from config.json, accepting transformers 4.x and 5.x spellings."""
    with open(path) as f:
        raw = json.load(f)
    if raw.get("model_type", "qwen2") != "qwen2":
        raise ValueError(f"{path}: model_type is {raw['model_type']!r}; model.py implements qwen2 only")
    if raw.get("use_sliding_window"):
        raise ValueError(f"{path}: use_sliding_window=true is not supported (no Qwen2.5 checkpoint uses it)")
    # 4.x writes rope_theta and torch_dtype at the top level; 5.x writes rope_parameters and dtype.
    rope_theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta"))
    scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise ValueError(f"{path}: rope scaling {scaling} is not supported")
    fields = {}
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads"):
        if name not in raw:
            raise KeyError(f"{path}: config has no {name!r}")
        fields[name] = raw[name]
    if "head_dim" in raw and raw["head_dim"] != raw["hidden_size"] // raw["num_attention_heads"]:
        raise ValueError(f"{path}: head_dim {raw['head_dim']} != hidden_size / num_attention_heads")
    return Config(**fields,
                  rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
                  rope_theta=float(rope_theta if rope_theta is not None else 1_000_000.0),
                  tie_word_embeddings=raw.get("tie_word_embeddings", False),
                  max_position_embeddings=raw.get("max_position_embeddings", 32768),
                  torch_dtype=raw.get("torch_dtype", raw.get("dtype")) or "bfloat16",
                  bos_token_id=raw.get("bos_token_id"), eos_token_id=raw.get("eos_token_id"))


# The Qwen2.5 sizes (each one's config.json on the hub: hidden, intermediate, layers, heads, KV
# heads, vocab, tied), so that memory plans need no download. s1-32B and s1.1-32B are the 32B shape.
QWEN25_SHAPES = {"0.5B": (896, 4864, 24, 14, 2, 151936, True), "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
                 "3B": (2048, 11008, 36, 16, 2, 151936, True), "7B": (3584, 18944, 28, 28, 4, 152064, False),
                 "14B": (5120, 13824, 48, 40, 8, 152064, False), "32B": (5120, 27648, 64, 40, 8, 152064, False),
                 "72B": (8192, 29568, 80, 64, 8, 152064, False)}


def known_shape(name):
    """The Config of a hub name ending in a Qwen2.5 size (Qwen/Qwen2.5-32B-Instruct, simplescaling/s1.1-32B), or None."""
    import re
    m = re.search(r"-(\d+(?:\.\d+)?B)(?:-|$)", name)
    if not m or m.group(1) not in QWEN25_SHAPES:
        return None
    h, i, layers, heads, kv, vocab, tied = QWEN25_SHAPES[m.group(1)]
    return Config(vocab_size=vocab, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied)


def hf_config_dict(cfg, dtype=None):
    """config.json in the 4.x spelling that real Qwen2.5 checkpoints use; transformers 5 and vLLM read it."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings, "max_window_layers": cfg.num_hidden_layers,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_word_embeddings, "use_sliding_window": False, "sliding_window": None,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        "torch_dtype": dtype or cfg.torch_dtype,
    }


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


def packed_attention(q, k, v, cu_seqlens, max_seqlen):
    """Causal attention inside each document of a packed batch.
    q: (N, Hq, D), k and v: (N, Hkv, D) for the N = B*T flattened tokens; documents are
    [cu_seqlens[i], cu_seqlens[i+1])."""
    flash_dtype = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)  # the varlen kernels' only dtypes
    if flash_dtype and flash_attn_varlen_func is not None:
        return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True)
    if flash_dtype and varlen_attn is not None:
        if _VARLEN_NEW_API:
            return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                               window_size=(-1, 0), enable_gqa=True)
        if q.shape[1] != k.shape[1]:  # no GQA in the older kernel: repeating the KV heads is exact
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, is_causal=True)
    # CPU (and fp32 or no varlen kernel on CUDA): SDPA one document at a time. Exact, and the cost
    # is in the matmuls, not the Python loop. The batch dimension of 1 matters: SDPA only takes its
    # fast (flash) CPU kernel for 4-D inputs; 3-D ones fall back to the quadratic-memory math path.
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        doc = lambda t: t[start:end].transpose(0, 1)[None]  # (1, H, T_doc, D)
        out[start:end] = F.scaled_dot_product_attention(doc(q), doc(k), doc(v), is_causal=True,
                                                        enable_gqa=True)[0].transpose(0, 1)
    return out


def document_boundaries(position_ids):
    """cu_seqlens (int32) and the longest document for packed rows: a document starts at every row
    start and wherever the position restarts at 0 (the convention of torchtitan and of transformers'
    flash-attention path)."""
    B, T = position_ids.shape
    starts = position_ids.flatten() == 0
    starts[::T] = True
    cu_seqlens = torch.cat([starts.nonzero().flatten(),
                            torch.tensor([B * T], device=position_ids.device)]).to(torch.int32)
    return cu_seqlens, int(cu_seqlens.diff().max())


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, docs=None, cache=None, layer=0):
        B, T, _ = x.shape
        q = apply_rope(self.q_proj(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if cache is not None:
            out = cache.attend(layer, q, k, v)
        elif docs is not None:
            flat = lambda t: t.reshape(B * T, t.shape[2], self.head_dim)
            out = packed_attention(flat(q), flat(k), flat(v), *docs).view(B, T, self.n_heads, self.head_dim)
        else:  # one document per row; GQA is handled inside SDPA without copying k and v
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True, enable_gqa=True).transpose(1, 2)
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
            position_ids = position_ids.expand(B, T)  # one (1, T) row of positions may serve the batch
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
    its logits, so peak memory is one chunk of fp32 logits (32K x 152K fp32 logits would be 20 GB)."""
    keep = labels != IGNORE
    h, y = hidden[keep], labels[keep]
    parts = [checkpoint(_chunk_ce, h[i:i + chunk], weight, y[i:i + chunk], use_reentrant=False)
             for i in range(0, y.numel(), chunk)]
    losses = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
    if not parts:  # nothing to learn here (an idle row), but under FSDP every rank must produce a
        return losses + 0.0 * (hidden.sum() + weight[:1].sum())  # gradient for every parameter
    return losses.masked_scatter(keep, torch.cat(parts))


# ----------------------------------------------------------------------------------------------
# Loading and saving Hugging Face checkpoints

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


def checkpoint_dir(name_or_path, patterns=("*.json", "*.safetensors", "*.txt", "*.jinja")):
    """A local directory as is; anything else is a hub name, fetched (or found in the cache when
    HF_HUB_OFFLINE=1) by huggingface_hub: the files matching `patterns` only. One process per node
    downloads; the others wait for it and then read the cache (see download_lock)."""
    name_or_path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path) or name_or_path.startswith((".", "/")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(f"{name_or_path}: not a checkpoint directory (nor a hub name like Qwen/Qwen2.5-0.5B)")
    from huggingface_hub import snapshot_download
    try:
        with download_lock(name_or_path) as waited:
            # A process that waited reads what the one before it fetched, without asking the hub again:
            # every rank then loads the same commit even if the repo moves meanwhile. If that snapshot
            # lacks files we want (the first process died, or fetched config.json only), fetch them.
            return (waited and cached_snapshot(name_or_path, patterns)) or \
                snapshot_download(name_or_path, allow_patterns=list(patterns))
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path}: not a local directory and not available from the hub "
                                f"({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def download_lock(repo):
    """Hold an exclusive lock on hub repo `repo` for this node; yields True if another process held
    it first (so this one waited). An flock on a file in the hub cache, not a barrier: train.py
    resolves --model before any process group exists, prepare/curate run alone, and torchrun ranks,
    two jobs on one node, or nodes sharing the cache directory all serialise the same way. The
    kernel drops the lock when its holder exits, so a crashed download leaves no stale lock."""
    from huggingface_hub import constants
    lock_dir = os.path.join(constants.HF_HUB_CACHE, ".locks")  # huggingface_hub's own lock folder
    try:
        os.makedirs(lock_dir, exist_ok=True)
        f = open(os.path.join(lock_dir, "models--" + repo.replace("/", "--") + ".download.lock"), "a")
    except OSError:  # a read-only cache: nothing can be downloaded into it, so nothing to serialise
        yield False
        return
    with f:  # closing the file releases the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:  # another process is downloading: wait until it is done
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        except OSError:  # a filesystem without locks (some NFS setups): go on unserialised
            waited = False
        yield waited


def cached_snapshot(repo, patterns):
    """The cached snapshot of hub repo `repo`, or None if it is missing or lacks files matching
    `patterns` (huggingface_hub checks against the file listing it cached when it downloaded)."""
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(repo, allow_patterns=list(patterns), local_files_only=True)
    except Exception:
        return None


def safetensors_files(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return [os.path.join(path, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def read_checkpoint(path, expected_shapes, tied, select=None):
    """Yield (name, tensor) from a checkpoint's safetensors, checking every name and shape against
    `expected_shapes`, and that none is missing. Streams one tensor at a time.
    select(name, shape) -> index or None, if given: read only tensor[index] (a tuple of slices) of
    that tensor, through safetensors' get_slice, so that the rest is never read (sample.py's tensor
    parallel ranks read only their rows or columns); None reads it whole."""
    from safetensors import safe_open
    seen = set()
    for file in safetensors_files(path):
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: listed in the index but missing")
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                if tied and name == "lm_head.weight":
                    continue  # some tied checkpoints store the shared matrix twice
                if name not in expected_shapes:
                    raise KeyError(f"{file}: unexpected tensor {name!r}, not part of a Qwen2 model")
                part = f.get_slice(name)
                shape = tuple(part.get_shape())
                if shape != tuple(expected_shapes[name]):
                    raise ValueError(f"{file}: {name} has shape {shape}, expected {tuple(expected_shapes[name])}")
                seen.add(name)
                index = select(name, shape) if select else None
                # a column slice comes back as a strided view: make it dense (copies the slice only)
                yield name, f.get_tensor(name) if index is None else part[index].contiguous()
    missing = sorted(set(expected_shapes) - seen)
    if missing:
        raise KeyError(f"{path}: checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:3]}")


def from_pretrained(name_or_path, device="cpu", dtype=None, select=None):
    """Build on the meta device (no memory, no init), then stream the weights in, checked.
    select(name, shape) -> index or None, if given, picks the part of each tensor to read and keep
    (see read_checkpoint; sample.py's tensor parallelism keeps only its rank's slice)."""
    path = checkpoint_dir(name_or_path)
    cfg = read_config(os.path.join(path, "config.json"))
    dtype = dtype or getattr(torch, cfg.torch_dtype)
    with torch.device("meta"):
        model = Qwen2(cfg)
    params = dict(model.named_parameters())  # a tied lm_head appears once, as the embedding
    shapes = {n: p.shape for n, p in params.items()}
    for name, tensor in read_checkpoint(path, shapes, cfg.tie_word_embeddings, select):
        module_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module_name), attr, nn.Parameter(tensor.to(device, dtype)))
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.source_dir = path  # save_pretrained copies the tokenizer from here
    return model


def save_pretrained(model_or_state_dict, out_dir, cfg=None, tokenizer_dir=None, max_shard_bytes=5 << 30):
    """Write a checkpoint transformers and vLLM load: config.json, generation_config.json,
    safetensors (sharded with an index above max_shard_bytes) and the tokenizer files. Takes a
    model or a full state dict (train.py passes FSDP's). Written to a temporary directory first and
    swapped in at the end, so a failure never leaves a half-written checkpoint at out_dir."""
    from safetensors.torch import save_file
    if isinstance(model_or_state_dict, nn.Module):
        cfg = cfg or model_or_state_dict.cfg
        tokenizer_dir = tokenizer_dir or getattr(model_or_state_dict, "source_dir", None)
        state = model_or_state_dict.state_dict()
    else:
        state = model_or_state_dict
        if cfg is None:
            raise ValueError("save_pretrained: a state dict needs cfg= (the model's Config)")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()
               if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    shards, size = [{}], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    out_dir = out_dir.rstrip("/")
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(tmp, file), metadata={"format": "pt"})
            weight_map.update({name: file for name in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config_dict(cfg, dtype), f, indent=2)
    source = tokenizer_dir and os.path.join(tokenizer_dir, "generation_config.json")
    if source and os.path.exists(source):
        shutil.copy(source, tmp)
    else:
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}, f, indent=2)
    for name in TOKENIZER_FILES if tokenizer_dir else ():
        if os.path.exists(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir + ".old", ignore_errors=True)
        os.rename(out_dir, out_dir + ".old")
        os.rename(tmp, out_dir)
        shutil.rmtree(out_dir + ".old")
    else:
        os.rename(tmp, out_dir)


def num_params(model):
    return sum(p.numel() for p in model.parameters())
