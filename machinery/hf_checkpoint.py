"""Loading and saving Hugging Face checkpoints of model.py's Qwen2.

A checkpoint is a directory (or a hub name, fetched into the hub cache) holding config.json,
model.safetensors or shards listed in model.safetensors.index.json, generation_config.json and
the tokenizer files. In the order they appear:
    read_config(path) -> Config         config.json in transformers 4.x or 5.x spelling
    config_json(cfg)                    config.json as we write it (the 4.x spelling Qwen2.5 uses)
    known_shape(name) -> Config | None  the Qwen2.5 sizes by hub name, for memory plans without a
                                        download
    checkpoint_dir(name_or_path)        a local directory as is, else a hub download (once per node)
    weights_fingerprint(path)           the sha256 of each safetensors file: which weights made an
                                        output
    read_checkpoint(path, shapes, ...)  stream (name, tensor) out of the safetensors, checked
    from_pretrained(name_or_path)       a Qwen2 with the checkpoint's weights
    save_pretrained(model, out_dir)     write a checkpoint that transformers and vLLM load
"""
import contextlib
import fcntl
import json
import os
import re
import shutil

import torch
import torch.nn as nn

from model import Config, Qwen2


# ----------------------------------------------------------------------------------------------
# config.json

def read_config(path):
    """Config from config.json, accepting transformers 4.x and 5.x spellings. A config the
    architecture cannot run stops with one line naming the file and the field."""
    with open(path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}: not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"{path}: not a JSON object")
    if raw.get("model_type", "qwen2") != "qwen2":
        raise SystemExit(f"{path}: model_type is {raw['model_type']!r}; model.py implements qwen2 "
                         "only")
    if raw.get("use_sliding_window"):
        raise SystemExit(f"{path}: use_sliding_window=true is not supported (no Qwen2.5 checkpoint "
                         "uses it)")
    # 4.x writes rope_theta and torch_dtype at the top level; 5.x writes rope_parameters and dtype.
    rope_theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta"))
    scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise SystemExit(f"{path}: rope scaling {scaling} is not supported")
    fields = {}
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads"):
        if name not in raw:
            raise SystemExit(f"{path}: config has no {name!r}")
        fields[name] = raw[name]
    try:
        cfg = Config(**fields,
                     rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
                     rope_theta=float(rope_theta if rope_theta is not None else 1_000_000.0),
                     tie_word_embeddings=raw.get("tie_word_embeddings", False),
                     max_position_embeddings=raw.get("max_position_embeddings", 32768),
                     torch_dtype=raw.get("torch_dtype", raw.get("dtype")) or "bfloat16",
                     bos_token_id=raw.get("bos_token_id"), eos_token_id=raw.get("eos_token_id"))
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{path}: {e}") from None
    if raw.get("head_dim", cfg.head_dim) != cfg.head_dim:
        raise SystemExit(f"{path}: head_dim {raw['head_dim']} != hidden_size / "
                         f"num_attention_heads ({cfg.head_dim})")
    return cfg


def config_json(cfg, dtype=None):
    """config.json in the 4.x spelling that real Qwen2.5 checkpoints use; transformers 5 and vLLM
    read it."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "max_window_layers": cfg.num_hidden_layers,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_word_embeddings, "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        "torch_dtype": dtype or cfg.torch_dtype,
    }


# ----------------------------------------------------------------------------------------------
# Sizes known by name

# The Qwen2.5 sizes (each one's config.json on the hub: hidden, intermediate, layers, heads, KV
# heads, vocab, tied), so that memory plans need no download. s1-32B and s1.1-32B are the 32B
# shape.
QWEN25_SHAPES = {"0.5B": (896, 4864, 24, 14, 2, 151936, True),
                 "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
                 "3B": (2048, 11008, 36, 16, 2, 151936, True),
                 "7B": (3584, 18944, 28, 28, 4, 152064, False),
                 "14B": (5120, 13824, 48, 40, 8, 152064, False),
                 "32B": (5120, 27648, 64, 40, 8, 152064, False),
                 "72B": (8192, 29568, 80, 64, 8, 152064, False)}


def known_shape(name):
    """The Config of a hub name ending in a Qwen2.5 size (Qwen/Qwen2.5-32B-Instruct,
    simplescaling/s1.1-32B), or None."""
    m = re.search(r"-(\d+(?:\.\d+)?B)(?:-|$)", name)
    if not m or m.group(1) not in QWEN25_SHAPES:
        return None
    h, i, layers, heads, kv, vocab, tied = QWEN25_SHAPES[m.group(1)]
    return Config(vocab_size=vocab, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied)


def plan_config(name_or_path):
    """A model's Config for a memory plan, without downloading weights: a local config.json, the
    shipped shape of a Qwen2.5 size named in a hub name, or else the hub's config.json (one small
    file)."""
    if os.path.isdir(name_or_path):
        return read_config(os.path.join(name_or_path, "config.json"))
    known = known_shape(name_or_path)
    if known:
        return known
    path = checkpoint_dir(name_or_path, patterns=("config.json",))
    return read_config(os.path.join(path, "config.json"))


# ----------------------------------------------------------------------------------------------
# Finding a checkpoint: a local directory or the hub

# What to fetch of a hub checkpoint: everything but the weights (config.json,
# generation_config.json, the safetensors index, the tokenizer files), and that with the weights
# (a process that reads them).
METADATA_FILES = ("*.json", "*.txt", "*.jinja")
CHECKPOINT_FILES = METADATA_FILES + ("*.safetensors",)


def checkpoint_dir(name_or_path, patterns=CHECKPOINT_FILES):
    """A local directory as is; anything else is a hub name, fetched (or found in the cache when
    HF_HUB_OFFLINE=1) by huggingface_hub: the files matching `patterns` only (METADATA_FILES for a
    process that reads no weights). One process per node downloads; the others wait for it and then
    read the cache (see download_lock)."""
    name_or_path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(name_or_path):
        return name_or_path
    if (os.path.exists(name_or_path) or name_or_path.startswith((".", "/"))
            or name_or_path.count("/") != 1):
        raise FileNotFoundError(f"{name_or_path}: not a checkpoint directory (nor a hub name like "
                                "Qwen/Qwen2.5-0.5B)")
    from huggingface_hub import snapshot_download
    try:
        with download_lock(name_or_path) as waited:
            # A process that waited reads what the one before it fetched, without asking the hub
            # again: every rank then loads the same commit even if the repo moves meanwhile. If that
            # snapshot lacks files we want (the first process died, or fetched config.json only),
            # fetch them.
            return (waited and cached_snapshot(name_or_path, patterns)) or \
                snapshot_download(name_or_path, allow_patterns=list(patterns))
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path}: not a local directory and not available from "
                                f"the hub ({type(e).__name__}: {e})") from None


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
        name = "models--" + repo.replace("/", "--") + ".download.lock"
        f = open(os.path.join(lock_dir, name), "a")
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


# ----------------------------------------------------------------------------------------------
# Reading and writing

def safetensors_files(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(path, name) for name in files]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def weights_fingerprint(path, earlier=None):
    """Which weights a local checkpoint holds, for outputs that must not mix two models (eval.py's
    and sample.py's resume): {"sha256": one digest, "files": {file: its sha256}, "stat": {file:
    [bytes, mtime_ns]}}. The digest is the file's sha256 (what `sha256sum model.safetensors`
    prints) when there is one file, else the sha256 of the listing `sha256sum` prints for the
    shards. Files are hashed in parallel (hashlib releases the GIL). earlier: a fingerprint of the
    same directory made before; when no file's size or modification time has changed it is
    returned as is, so that a resumed run does not read 65 GB again."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor
    files = safetensors_files(path)
    stat = {os.path.basename(f): [os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files}
    if earlier and earlier.get("stat") == stat:
        return earlier

    def sha256(file):
        h = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
        return h.hexdigest()
    with ThreadPoolExecutor(min(8, len(files))) as pool:
        digests = dict(zip(stat, pool.map(sha256, files)))
    listing = "".join(f"{d}  {name}\n" for name, d in digests.items())
    if len(digests) == 1:
        one = next(iter(digests.values()))
    else:
        one = hashlib.sha256(listing.encode()).hexdigest()
    return {"sha256": one, "files": digests, "stat": stat}


def fingerprint_for_resume(model, earlier=None):
    """The fingerprint a resumable output records of the weights that made it (eval.py, sample.py):
    weights_fingerprint for a local directory, read by rank 0 only (the other ranks keep earlier);
    earlier as it is for a hub name (its name is the key) or a directory that is gone."""
    if model and os.path.isdir(model) and int(os.environ.get("RANK", 0)) == 0:
        return weights_fingerprint(model, earlier)
    return earlier


def read_checkpoint(path, expected_shapes, tied, select=None):
    """Yield (name, tensor) from a checkpoint's safetensors, checking every name and shape against
    `expected_shapes`, and that none is missing. Streams one tensor at a time.
    select(name, shape) -> index or None, if given: read only tensor[index] (a tuple of slices) of
    that tensor, through safetensors' get_slice, so that the rest is never read (parallel.py's
    tensor-parallel ranks read only their slice of each weight matrix); None reads it whole."""
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
                    raise ValueError(f"{file}: {name} has shape {shape}, expected "
                                     f"{tuple(expected_shapes[name])}")
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
    (see read_checkpoint; parallel.py's tensor parallelism keeps only its rank's slice)."""
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


# copied next to the weights by save_pretrained, when the source has them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")


def save_pretrained(model_or_state_dict, out_dir, cfg=None, tokenizer_dir=None,
                    max_shard_bytes=5 << 30):
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
        json.dump(config_json(cfg, dtype), f, indent=2)
    source = tokenizer_dir and os.path.join(tokenizer_dir, "generation_config.json")
    if source and os.path.exists(source):
        shutil.copy(source, tmp)
    else:
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}, f,
                      indent=2)
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
