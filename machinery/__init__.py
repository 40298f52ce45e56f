"""The machinery below the stage scripts: each file is read in one sitting, and none imports a
stage.

    chat.py           the s1 chat format: the training string, its loss mask, tokenizers
    hf_checkpoint.py  Hugging Face checkpoints in and out, and the fingerprint of a model's weights
    engine.py         the inference engine: paged KV cache, continuous batching, forks
    parallel.py       process groups, rank 0's decisions, tensor-parallel slices, replicas
    plan.py           memory plans before renting (--dry-run); GPUs' peak FLOPS and bandwidth
    benchmarks.py     s1's benchmarks, their prompts and offline grading
    sources.py        s1's 16 question sources
    api.py            an OpenAI-compatible client with retries
    jsonl.py          one rule for every JSONL file, resumable outputs, atomic writes
    cli.py            what every command line shares: checked flag types, --device, one-line errors
    mini.py           the demo's built-in task, its teacher and its solver
"""
