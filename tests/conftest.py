"""Shared test helpers. Tests run offline on CPU and build tiny random Qwen2 models themselves."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TOKENIZER_DIR = os.path.join(ROOT, "data", "qwen2.5-tokenizer")
# GPQA is never committed. Where this checkout sits beside the project's shared data (the machines
# this project is developed on), the in-process tests read that copy; elsewhere they skip.
SHARED_GPQA = os.path.join(ROOT, "..", "shared", "data", "eval", "gpqa_diamond.jsonl.gz")

import pytest  # noqa: E402
import torch  # noqa: E402

from machinery import benchmarks  # noqa: E402
if not os.path.exists(benchmarks.BENCHMARKS["gpqa"][3]) and os.path.exists(SHARED_GPQA):
    benchmarks.BENCHMARKS["gpqa"] = benchmarks.BENCHMARKS["gpqa"][:3] + (os.path.normpath(SHARED_GPQA),)


def tiny_hf_model(tie=False, vocab=256, hidden=64, layers=2, heads=4, kv_heads=2, seed=0):
    """A random transformers Qwen2ForCausalLM (the oracle), small enough to run in milliseconds."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         tie_word_embeddings=tie, rope_theta=1e6, max_position_embeddings=512)
    model = Qwen2ForCausalLM(config).float().eval()
    with torch.no_grad():  # transformers inits biases to zero; random ones make the test meaningful
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="session", params=[False, True], ids=["untied", "tied"])
def tiny_checkpoint(request, tmp_path_factory):
    """(directory, transformers model) for a tiny checkpoint saved to disk, untied and tied."""
    hf = tiny_hf_model(tie=request.param)
    path = tmp_path_factory.mktemp("tied" if request.param else "untied")
    hf.save_pretrained(path)
    return str(path), hf


def run(cmd, cwd=ROOT, timeout=300, check=True):
    """Run a command; on failure show its output (the error names what went wrong)."""
    import subprocess
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 or not check, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def tiny_sft(tmp_path_factory):
    """A tiny untied Qwen2 checkpoint with a byte-level tokenizer, and 16 s1-style examples."""
    import json
    import random
    from machinery import chat
    root = tmp_path_factory.mktemp("sft")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2).save_pretrained(root / "model")
    chat.build_byte_tokenizer(str(root / "model"))
    rng = random.Random(0)
    with open(root / "data.jsonl", "w") as f:
        for _ in range(16):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            steps = " ".join(f"{a}+{k}={a + k}." for k in range(1, rng.randint(2, 8)))
            f.write(json.dumps({"question": f"What is {a}+{b}?", "thinking": f"{steps} So {a + b}.",
                                "answer": str(a + b)}) + "\n")
    return str(root / "model"), str(root / "data.jsonl")


def bigram_model(tokenizer, chain):
    """A Qwen2 whose next token depends only on the current one, as `chain` says: every block
    adds nothing (o_proj and down_proj are zero), the embedding is one-hot and the LM head maps
    token t to chain[t]. So its output is known exactly, e.g. it ends its thinking after "abc"."""
    import model as M
    vocab = len(tokenizer)
    cfg = M.Config(vocab_size=vocab, hidden_size=264, intermediate_size=8, num_hidden_layers=1,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = M.Qwen2(cfg)
    model.init_weights()
    tid = lambda s: tokenizer.encode(s, add_special_tokens=False)[0]
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for a, b in chain.items():
            model.lm_head.weight[tid(b), tid(a)] = 1.0
    return model.eval()


# A bigram model's chain for budget forcing: after "think" it thinks "abc", then ends its thinking.
# After a forced "Wait": "abc" again. After the forced "answer": "\n7", then <|im_end|>; after the
# forced "Final Answer:", " 7<|im_end|>".
BIGRAM_CHAIN = {"k": "a", "a": "b", "b": "c", "c": "<|im_start|>", "t": "a",
                "r": "\n", "\n": "7", ":": " ", " ": "7", "7": "<|im_end|>"}


@pytest.fixture(scope="module")
def bigram(tmp_path_factory):
    """(model, byte tokenizer) of the bigram model that follows BIGRAM_CHAIN."""
    from machinery import chat
    tokenizer = chat.build_byte_tokenizer(str(tmp_path_factory.mktemp("bytes")))
    return bigram_model(tokenizer, BIGRAM_CHAIN), tokenizer
