"""sample.py: batched decoding with a KV cache, and s1's budget forcing.

    python sample.py --model simplescaling/s1.1-32B --prompt "How many r in raspberry?" --max-thinking-tokens 2000
    python sample.py --model DIR --input questions.jsonl --output samples.jsonl --num-ignore 2   # resumable
    torchrun --nproc-per-node 4 sample.py --model simplescaling/s1.1-32B --input ...             # tensor parallel
    python sample.py --serve --model DIR --port 8000      # OpenAI-compatible /v1/chat/completions

The decoder prefills every prompt once, then feeds exactly one token per row per step into the KV
cache: the token the model sampled, or, when budget forcing has queued text for that row, the next
forced token. Rows finish independently, and nothing is ever re-prefilled.

Budget forcing (s1_reference §5.1-5.3) is a small state machine per row, in `advance`:
  - the prompt ends in "<|im_start|>think"; every token after it is a thinking token until the model
    emits the end-of-thinking delimiter <|im_start|> (or <|im_end|>);
  - cap: once a row has max_thinking_tokens thinking tokens, force "\\n<|im_start|>answer\\nFinal Answer:";
  - extend: when the row emits the delimiter with ignores left, drop it and force "Wait" instead;
    the forced "Wait" counts as thinking, so the budget shrinks across rounds (the s1 README recipe);
  - a natural stop keeps the model's <|im_start|> and forces "answer"; the answer runs to <|im_end|>.
"""
import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

import chat
import model as qwen

# Suffixes of the paper's conditional-control baselines (s1_reference §5.4), appended to the question.
CONTROL = {
    "tokens": "\n\nThink for up to {} tokens.",
    "steps": "\n\nThink for up to {} steps.",
    "long": "\n\nAnswer after a long amount of thinking. If you feel like you are finished early, spend the extra "
            "time trying to double-check your work until you are absolutely sure that you have the correct answer.",
    "short": "\n\nAnswer after a short amount of thinking. Do not spend excessive time double-checking your work.",
}


def control_prompt(question, kind=None, value=None):
    return question if kind is None else question + CONTROL[kind].format(value)


@dataclass
class Row:
    """One sequence being decoded."""
    prompt_len: int
    cap: int | None             # most thinking tokens (None: no cap)
    ignores_left: int           # end-of-thinking delimiters still to replace by "Wait"
    phase: str = "think"        # think -> answer -> done
    forced: deque = field(default_factory=deque)  # tokens to feed before sampling again
    tokens: list = field(default_factory=list)    # everything fed after the prompt
    thinking_tokens: int = 0
    answer_start: int | None = None  # index in tokens where the answer text begins (after its header)
    ended: str = ""             # how thinking ended: natural | capped | length
    events: list = field(default_factory=list)    # what budget forcing did, and when
    finished: bool = False      # the answer was closed by <|im_end|>


def special_ids(tokenizer, ignore_str):
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    return dict(im_start=enc(chat.IM_START)[0], im_end=enc(chat.IM_END)[0], answer=enc("answer"),
                forced_answer=enc(chat.FORCED_ANSWER), ignore=enc(ignore_str), ignore_str=ignore_str)


def advance(row, token, sampled, ids):
    """Budget forcing: given the row's next token (sampled by the model, or popped from its forced
    queue), return the token to feed, updating the row's phase, counts and forced queue."""
    if row.phase == "think":
        if sampled and token in (ids["im_start"], ids["im_end"]):  # the model ends its thinking
            if row.ignores_left > 0:  # suppress the delimiter, think on: "Wait"
                row.ignores_left -= 1
                row.events.append({"at": row.thinking_tokens, "what": ids["ignore_str"]})
                row.forced.extend(ids["ignore"])
                token = row.forced.popleft()
            else:  # natural end: keep <|im_start|> (even if the model said <|im_end|>), force "answer"
                row.phase, row.ended = "answer", "natural"
                row.forced.extend(ids["answer"])
                return ids["im_start"]
        row.thinking_tokens += 1
        if row.cap is not None and row.thinking_tokens >= row.cap:  # out of budget: answer now
            row.phase, row.ended = "answer", "capped"
            row.forced = deque(ids["forced_answer"])
            row.events.append({"at": row.thinking_tokens, "what": chat.FORCED_ANSWER})
        return token
    if row.answer_start is None and sampled:  # the first token the model writes after the header
        row.answer_start = len(row.tokens)
    if sampled and token == ids["im_end"]:
        row.phase, row.finished = "done", True
    return token


def sample_tokens(logits, temperature, top_p, generator, vocab_size):
    """Greedy at temperature 0, else temperature + nucleus sampling. Ids past the tokenizer's
    vocabulary (the checkpoint pads its embedding to 151,936 rows) are never sampled: s1's README
    reports vLLM crashing on them at temperature 1."""
    logits = logits.float()
    logits[:, vocab_size:] = float("-inf")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(model, prompts, rows, ids, max_tokens, temperature=0.0, top_p=1.0, seed=0, vocab_size=None,
           on_token=None):
    """Run rows (one per prompt, token-id lists) to completion in one batch. Returns the number of
    tokens fed through the model: prompts + sampled + forced, each once."""
    device = model.lm_head.weight.device
    B = len(prompts)
    cache = qwen.KVCache(model.cfg, B, max_tokens + 1, device=device, dtype=model.lm_head.weight.dtype,
                         kv_heads=model.model.layers[0].self_attn.n_kv_heads)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    padded = torch.zeros(B, max(len(p) for p in prompts), dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        padded[b, :len(p)] = torch.tensor(p)
    logits = model(padded, cache=cache, n_new=lengths)
    fed = int(lengths.sum())
    generator = torch.Generator(device=device).manual_seed(seed)
    vocab_size = vocab_size or logits.shape[-1]
    while True:
        sampled = sample_tokens(logits, temperature, top_p, generator, vocab_size).tolist()
        feed, active = [0] * B, [0] * B
        for b, row in enumerate(rows):
            if row.phase == "done":
                continue
            if row.prompt_len + len(row.tokens) >= max_tokens:  # out of context
                row.ended = row.ended or "length"
                row.phase = "done"
                continue
            forced = bool(row.forced)
            token = advance(row, row.forced.popleft() if forced else sampled[b], not forced, ids)
            if row.phase == "done":  # <|im_end|> closed the answer: nothing left to feed
                row.tokens.append(token)
                on_token and on_token(b, row)
                continue
            row.tokens.append(token)
            feed[b], active[b] = token, 1
            on_token and on_token(b, row)
        if not any(active):
            return fed
        logits = model(torch.tensor(feed, device=device)[:, None], cache=cache,
                       n_new=torch.tensor(active, device=device))
        fed += sum(active)


def answer_span(row):
    """Token range of the answer text: from the first token the model wrote after the answer
    header, without the closing <|im_end|>. (The thinking is tokens[:row.thinking_tokens].)"""
    start = len(row.tokens) if row.answer_start is None else row.answer_start
    return start, len(row.tokens) - row.finished


def result(row, tokenizer, prompt):
    """What a caller keeps of a finished row."""
    start, end = answer_span(row)
    decode_ = lambda toks: tokenizer.decode(toks, skip_special_tokens=False)
    return {"prompt": prompt, "text": decode_(row.tokens), "thinking": decode_(row.tokens[:row.thinking_tokens]),
            "answer": decode_(row.tokens[start:end]), "thinking_tokens": row.thinking_tokens,
            "answer_tokens": end - start, "generated_tokens": len(row.tokens), "ended": row.ended or "length",
            "forced": row.events, "finished": row.finished}


def thinking_budget(value, prompt_len, max_tokens, n_forced):
    """A row's thinking cap. "auto" is the harness's: context - prompt - forced answer - 100 tokens
    for the answer (the prompt here already ends in <|im_start|>think; per row, not batch maximum)."""
    if value is None:
        return None
    if value == "auto":
        return max(1, max_tokens - prompt_len - n_forced - 100)
    return int(value)


def generate(model, tokenizer, questions, max_thinking_tokens=None, num_ignore=0, ignore_str="Wait",
             max_tokens=32768, temperature=0.0, top_p=1.0, seed=0, batch_size=16, progress=True, n=1,
             think=True, stats=None, on_token=None):
    """Generate for each question (the chat template is applied here); returns one dict per
    question, or n consecutive dicts per question when n > 1 (parallel sampling, for majority
    voting). think=False runs a plain chat completion without the thinking phase. stats, if a
    dict, gets "fed": tokens run through the model; on_token(row_index, row) is called per token."""
    from tqdm import tqdm
    ids = special_ids(tokenizer, ignore_str)
    questions = [q for q in questions for _ in range(n)]
    prompts = [chat.prompt_text(q) + (chat.completion_text() if think else "") for q in questions]
    results = []
    bar = tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False)
    for start in range(0, len(prompts), batch_size):
        texts = prompts[start:start + batch_size]
        encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        for i, p in enumerate(encoded):
            if len(p) >= max_tokens:
                raise ValueError(f"question {start + i}: the prompt has {len(p)} tokens, the context "
                                 f"(max_tokens) {max_tokens}: no room to generate")
        rows = [Row(prompt_len=len(p), ignores_left=num_ignore if think else 0,
                    cap=thinking_budget(max_thinking_tokens, len(p), max_tokens, len(ids["forced_answer"])),
                    phase="think" if think else "answer") for p in encoded]
        fed = decode(model, encoded, rows, ids, max_tokens, temperature, top_p, seed + start, len(tokenizer), on_token)
        if stats is not None:
            stats["fed"] = stats.get("fed", 0) + fed
        results += [result(r, tokenizer, t) for r, t in zip(rows, texts)]
        bar.update(len(texts))
    bar.close()
    return results


def rejection_sample(model, tokenizer, questions, max_thinking_tokens, max_tries=8, temperature=1.0, seed=0, **kw):
    """The paper's rejection-sampling baseline: sample until the thinking ends by itself within
    the budget, at most max_tries times (the harness loops forever). Each result records its tries
    and whether it was accepted; after max_tries the last sample is kept, marked not accepted."""
    if not isinstance(max_thinking_tokens, int):
        raise ValueError(f"rejection sampling needs an integer thinking budget, not {max_thinking_tokens!r}")
    final, pending = [None] * len(questions), list(range(len(questions)))
    for attempt in range(max_tries):
        outs = generate(model, tokenizer, [questions[i] for i in pending], max_thinking_tokens=max_thinking_tokens + 1,
                        temperature=temperature, seed=seed + 1000 * attempt, **kw)
        still = []
        for i, out in zip(pending, outs):
            out.update(tries=attempt + 1, accepted=out["ended"] == "natural" and out["thinking_tokens"] <= max_thinking_tokens)
            final[i] = out
            if not out["accepted"]:
                still.append(i)
        pending = still
        if not pending:
            break
    return final


# ----------------------------------------------------------------------------------------------
# Tensor parallelism: Megatron-style column/row split of each block, for models larger than one GPU

def tensor_parallel_slice(rank, world):
    """A from_pretrained transform that keeps this rank's slice of every block weight: q/k/v (and
    their biases), gate and up by output features (whole heads), o_proj and down by input features.
    Embedding, norms and LM head stay whole on every rank."""
    def transform(name, t):
        if any(k in name for k in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            return t.chunk(world, dim=0)[rank].clone()
        if any(k in name for k in ("o_proj", "down_proj")):
            return t.chunk(world, dim=1)[rank].clone()
        return t
    return transform


def load_model(name_or_path, device, dtype, world=1, rank=0):
    if world > 1:
        kv_heads = qwen.read_config(os.path.join(qwen.checkpoint_dir(name_or_path), "config.json")).num_key_value_heads
        if kv_heads % world:
            raise SystemExit(f"--model has {kv_heads} KV heads: the number of processes ({world}) must divide it")
    transform = tensor_parallel_slice(rank, world) if world > 1 else None
    model = qwen.from_pretrained(name_or_path, device=device, dtype=dtype, transform=transform)
    if world > 1:
        for block in model.model.layers:
            block.self_attn.n_heads //= world
            block.self_attn.n_kv_heads //= world
            # each rank holds a partial sum of the block's output: add them up
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                proj.register_forward_hook(lambda mod, inp, out: dist.all_reduce(out) or out)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible server: POST /v1/chat/completions, streaming or not, budget forcing as extra
# request fields, the thinking returned as reasoning_content (as DeepSeek's API does)

def parse_request(req):
    """(question, generate kwargs, completion token limit, stream) from a request body, or ValueError."""
    if not isinstance(req, dict):
        raise ValueError("the body must be a JSON object")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError("each message needs a role (system, user or assistant) and a string content")
    users = [m for m in messages if m["role"] == "user"]
    if len(users) != 1 or messages[-1]["role"] != "user":
        raise ValueError("s1 is single-turn: send one user message, last")
    kw = {}
    for name, kind, ok in (("temperature", (int, float), lambda v: v >= 0), ("top_p", (int, float), lambda v: 0 < v <= 1),
                           ("seed", int, lambda v: True), ("num_ignore", int, lambda v: v >= 0),
                           ("ignore_str", str, lambda v: len(v) > 0)):
        if name in req:
            if not isinstance(req[name], kind) or isinstance(req[name], bool) or not ok(req[name]):
                raise ValueError(f"invalid '{name}': {req[name]!r}")
            kw[name] = req[name]
    budget = req.get("max_thinking_tokens")
    if budget is not None and budget != "auto" and (not isinstance(budget, int) or budget < 1):
        raise ValueError(f"invalid 'max_thinking_tokens': {budget!r} (a positive integer or \"auto\")")
    kw["max_thinking_tokens"] = budget
    limit = req.get("max_completion_tokens", req.get("max_tokens", 32768))
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"invalid 'max_tokens': {limit!r}")
    return users[0]["content"], kw, limit, bool(req.get("stream", False))


def make_server(model, tokenizer, host="127.0.0.1", port=8000, name="s1", context=32768):
    """A ThreadingHTTPServer; generation is serialised by a lock (one model, one batch at a time)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/models":
                return self.send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            self.send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                return self.send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                question, kw, limit, stream = parse_request(req)
            except (ValueError, UnicodeDecodeError) as e:
                return self.send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            prompt_len = len(tokenizer.encode(chat.prompt_text(question) + chat.completion_text(), add_special_tokens=False))
            if prompt_len >= context:
                return self.send(400, {"error": {"message": f"the prompt has {prompt_len} tokens, the context "
                                                            f"{context}: no room to generate",
                                                 "type": "invalid_request_error"}})
            kw.update(max_tokens=min(context, prompt_len + limit), progress=False)
            chunk = dict(id=f"chatcmpl-{time.time_ns()}", created=int(time.time()), model=name)
            with lock:
                if not stream:
                    out = generate(model, tokenizer, [question], **kw)[0]
                    message = {"role": "assistant", "content": out["answer"], "reasoning_content": out["thinking"]}
                    return self.send(200, dict(chunk, object="chat.completion", choices=[{
                        "index": 0, "message": message, "finish_reason": "stop" if out["finished"] else "length"}],
                        usage={"prompt_tokens": prompt_len, "completion_tokens": out["generated_tokens"],
                               "total_tokens": prompt_len + out["generated_tokens"]}))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                sent = {"think": 0, "answer": None}

                def emit(delta, finish=None):
                    body = dict(chunk, object="chat.completion.chunk",
                                choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
                    self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                    self.wfile.flush()

                def on_token(_, row):  # send whatever decodes to whole characters
                    if sent["think"] < row.thinking_tokens:
                        text = tokenizer.decode(row.tokens[sent["think"]:row.thinking_tokens], skip_special_tokens=False)
                        if not text.endswith("\ufffd"):
                            emit({"reasoning_content": text})
                            sent["think"] = row.thinking_tokens
                    start, end = answer_span(row)
                    begin = start if sent["answer"] is None else sent["answer"]
                    if begin < end:
                        text = tokenizer.decode(row.tokens[begin:end], skip_special_tokens=False)
                        if not text.endswith("\ufffd"):
                            emit({"content": text})
                            sent["answer"] = end

                emit({"role": "assistant"})
                out = generate(model, tokenizer, [question], on_token=on_token, **kw)[0]
                emit({}, "stop" if out["finished"] else "length")
                self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, fmt, *args):  # one quiet line per request
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    return ThreadingHTTPServer((host, port), Handler)


# ----------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="simplescaling/s1.1-32B", help="hub name or local checkpoint directory")
    p.add_argument("--tokenizer", default=None, help="default: the model's")
    p.add_argument("--prompt", help="one question, printed with its thinking and answer")
    p.add_argument("--input", help="JSONL with a 'question' (and optionally 'id') per line")
    p.add_argument("--output", help="JSONL of samples; rows already in it are skipped (resume)")
    p.add_argument("--max-thinking-tokens", default=None, help="cap on thinking tokens: an integer or 'auto'")
    p.add_argument("--num-ignore", type=int, default=0, help="times to replace the end of thinking by --ignore-str")
    p.add_argument("--ignore-str", default="Wait")
    p.add_argument("--max-tokens", type=int, default=32768, help="context: prompt + thinking + answer")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (s1's evaluation)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="samples per question (parallel sampling, majority voting)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--control", choices=sorted(CONTROL), help="conditional-control prompt (paper §5.4 baselines)")
    p.add_argument("--control-value", type=int, help="N for --control tokens/steps")
    p.add_argument("--rejection-sampling", action="store_true", help="resample until thinking ends within the cap")
    p.add_argument("--max-tries", type=int, default=8, help="--rejection-sampling: attempts per question")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--serve", action="store_true", help="serve /v1/chat/completions")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    if args.max_thinking_tokens not in (None, "auto"):
        try:
            args.max_thinking_tokens = int(args.max_thinking_tokens)
        except ValueError:
            p.error(f"--max-thinking-tokens must be an integer or 'auto', not {args.max_thinking_tokens!r}")
    if sum(x is not None for x in (args.prompt, args.input)) + args.serve != 1:
        p.error("give exactly one of --prompt, --input (with --output) or --serve")
    if args.input and not args.output:
        p.error("--input needs --output")
    if args.rejection_sampling and (not isinstance(args.max_thinking_tokens, int) or args.temperature <= 0):
        p.error("--rejection-sampling needs an integer --max-thinking-tokens and --temperature > 0 "
                "(greedy retries would all be the same)")
    if args.control in ("tokens", "steps") and args.control_value is None:
        p.error(f"--control {args.control} needs --control-value")
    return args


def read_questions(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path} line {n}: not valid JSON ({e})")
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise SystemExit(f"{path} line {n}: needs a string 'question'")
            rows.append(dict(row, id=row.get("id", n - 1)))
    return rows


def finished_ids(path):
    """Ids already in an output file. A torn last line (a crash mid-write) is dropped."""
    if not os.path.exists(path):
        return set()
    good = []
    with open(path) as f:
        for line in f:
            try:
                good.append(json.loads(line))
            except json.JSONDecodeError:
                break
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in good)
    os.replace(path + ".tmp", path)
    return {r["id"] for r in good}


def main(args):
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if world > 1:  # tensor parallel: every rank runs the same decode on its slice of each block
        if args.serve:
            raise SystemExit("--serve runs on one process; use tensor parallelism with --prompt or --input")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = load_model(args.model, device, dtype, world, rank)
    tokenizer = chat.load_tokenizer(args.tokenizer or model.source_dir)
    kw = dict(max_thinking_tokens=args.max_thinking_tokens, num_ignore=args.num_ignore, ignore_str=args.ignore_str,
              max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
              batch_size=args.batch_size, progress=rank == 0)
    run = lambda qs: (rejection_sample(model, tokenizer, qs, max_tries=args.max_tries, **kw)
                      if args.rejection_sampling else generate(model, tokenizer, qs, n=args.n, **kw))
    prompt_of = lambda q: control_prompt(q, args.control, args.control_value)

    if args.serve:
        server = make_server(model, tokenizer, args.host, args.port, name=args.model, context=args.max_tokens)
        print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}/v1/chat/completions", flush=True)
        server.serve_forever()
    elif args.prompt:
        for out in run([prompt_of(args.prompt)]):
            if rank == 0:
                print(f"--- thinking ({out['thinking_tokens']} tokens, ended {out['ended']}; forced: "
                      f"{[e['what'] for e in out['forced']]})\n{out['thinking']}")
                print(f"--- answer ({out['answer_tokens']} tokens)\n{out['answer']}")
    else:
        rows = read_questions(args.input)
        done = finished_ids(args.output) if rank == 0 else set()
        if world > 1:  # every rank must decode the same batches
            box = [done]
            dist.broadcast_object_list(box, src=0)
            done = box[0]
        todo = [r for r in rows if r["id"] not in done]
        print(f"{len(rows)} questions, {len(done)} already in {args.output}, {len(todo)} to go", file=sys.stderr)
        for start in range(0, len(todo), args.batch_size):  # write after every batch: a crash loses one batch
            batch = todo[start:start + args.batch_size]
            outs = run([prompt_of(r["question"]) for r in batch])
            if rank == 0:
                per = len(outs) // len(batch)
                with open(args.output, "a") as f:
                    for i, out in enumerate(outs):
                        f.write(json.dumps(dict(batch[i // per], sample=i % per, **out)) + "\n")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(parse_args())
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # gloo can abort at interpreter exit (cpu_notes §3)
