"""Benchmarks: ours against the transformers reference, in one process, on the same weights and inputs.

    python bench.py forward          # model.py forward vs transformers Qwen2ForCausalLM
    python bench.py train            # one training step (forward, loss, backward, AdamW) of each

Machines are noisy: every figure is the median of --repeats timed runs after one warm-up, and runs
of ours and the reference alternate so that drift hits both. The ratio ours/reference is what to
quote (< 1.0 means ours is faster).
"""
import argparse
import statistics
import time

import torch

import model as M

# Qwen2.5-0.5B's shape (its config.json), with random weights: nothing is downloaded.
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6,
                  tie_word_embeddings=True, max_position_embeddings=32768)


def build_pair(dtype, copy=False):
    """transformers' Qwen2ForCausalLM with random weights, and ours with the same values: the very
    same tensors, or (copy=True, for training, where each model updates its own) a copy."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    ref = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype).eval()
    with torch.device("meta"):
        ours = M.Qwen2(M.Config(**QWEN25_05B, torch_dtype=str(dtype).removeprefix("torch.")))
    ours.load_state_dict({k: v.clone() if copy else v for k, v in ref.state_dict().items()}, assign=True)
    ours.lm_head.weight = ours.model.embed_tokens.weight
    return ours.eval(), ref


def seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(name, ours_fn, ref_fn, repeats):
    """Median time of each after one warm-up; single runs alternate so that drift hits both alike."""
    ours_fn(), ref_fn()
    ours_t, ref_t = [], []
    for _ in range(repeats):
        ours_t.append(seconds(ours_fn))
        ref_t.append(seconds(ref_fn))
    o, r = statistics.median(ours_t), statistics.median(ref_t)
    print(f"| {name} | {o:.3f} s | {r:.3f} s | {o / r:.2f}x |", flush=True)
    return o, r


@torch.no_grad()
def bench_forward(args):
    print(f"\nForward of a random Qwen2.5-0.5B-shaped model, {args.tokens} tokens, batch 1, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | ours | transformers | ours / transformers |\n|---|---|---|---|")
    ids = torch.randint(0, 151643, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        ours, ref = build_pair(dtype)
        tag = str(dtype).removeprefix("torch.")
        compare(f"{tag}, all logits", lambda: ours(ids), lambda: ref(ids, use_cache=False), args.repeats)

        def ours_prefill():  # KV-cache prefill: only the last position's logits
            ours(ids, cache=M.KVCache(ours.cfg, 1, args.tokens, dtype=dtype))
        compare(f"{tag}, prefill (KV cache, last logits)", ours_prefill,
                lambda: ref(ids, use_cache=True, logits_to_keep=1), args.repeats)
        del ours, ref


def bench_train(args):
    """One step of train.py's inner loop (loss over the completion, backward, clip, AdamW) with our
    model and with transformers' in its place; bf16 weights, as a CPU cannot hold fp32 master
    weights plus fp32 optimizer state for this size within a short benchmark."""
    print(f"\nTraining step of a random Qwen2.5-0.5B-shaped model, {args.tokens} tokens, bf16, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print("| case | ours | transformers | ours / transformers |\n|---|---|---|---|")
    ours, ref = build_pair(torch.bfloat16, copy=True)
    ours.train(), ref.train()
    ids = torch.randint(0, 151643, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, : args.tokens // 4] = M.IGNORE  # the prompt carries no loss
    labels[:, -1] = M.IGNORE

    def step(model, loss_fn):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)

        def run():
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    n = (labels != M.IGNORE).sum()
    ours_step = step(ours, lambda: ours(ids, labels=labels).sum() / n)
    # transformers shifts labels itself: give it the unshifted targets
    hf_labels = torch.cat([torch.full((1, 1), M.IGNORE), labels[:, :-1]], dim=1)
    ref_step = step(ref, lambda: ref(ids, labels=hf_labels, use_cache=False).loss)
    compare("bf16, forward + backward + AdamW", ours_step, ref_step, args.repeats)


BENCHES = {"forward": bench_forward, "train": bench_train}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help=f"benchmarks to run, from {sorted(BENCHES)} (default: all)")
    parser.add_argument("--tokens", type=int, default=512, help="sequence length")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    args = parser.parse_args()
    for which in args.which or BENCHES:
        if which not in BENCHES:
            parser.error(f"unknown benchmark {which!r}; choose from {sorted(BENCHES)}")
        BENCHES[which](args)
