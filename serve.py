"""serve.py: an OpenAI-compatible server on the engine (engine.py, with sample.py's rows).
Start reading at Handler.complete (one request, from its HTTP thread) and EngineThread.run
(the one loop that steps the engine for every request).

    python serve.py --model simplescaling/s1.1-32B --port 8000
    # tensor parallel: one replica over every process (no --tp: see docs/sampling.md)
    torchrun --nproc-per-node 8 serve.py --model simplescaling/s1.1-32B --port 8000
    curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "1+1?"}],
                                                 "max_thinking_tokens": 2000}'

POST /v1/chat/completions (streaming or not) and GET /v1/models. Budget forcing comes as extra
request fields, those of sample.Setting (max_thinking_tokens: an integer or "auto", num_ignore,
ignore_str, min_thinking_tokens, control and control_value, step_forcing); the thinking is
returned as reasoning_content, as DeepSeek's API does, and the answer as content. A system message
(optional, first) replaces Qwen's default one; n, stop (applied to the content), max_tokens /
max_completion_tokens (generated tokens, thinking included), temperature, top_p and seed are
honoured; without a seed every request draws afresh. Any other OpenAI field (logprobs, tools,
response_format, ...) is a 400 naming it, never silently ignored.

One engine thread owns the model and steps it; every request joins the running batch (continuous
batching), the n choices of a request share its prompt, and the HTTP threads only parse, wait and
write. A client that disconnects, or a choice whose content reaches a stop string, frees its rows.
A bad request gets HTTP 400 with a JSON error (413: a body over --max-body-bytes; 408: a body that
stalls past --request-timeout), and the server keeps serving: every limit is a flag.
"""
import argparse
import dataclasses
import datetime
import json
import queue
import random
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch.distributed as dist

from machinery import chat, cli, engine, parallel
import sample

# ----------------------------------------------------------------------------------------------
# The recipe: s1's defaults, and what a client may ask

MODEL = "simplescaling/s1.1-32B"  # the released s1.1 model
MAX_TOKENS = 32768   # the context, prompt + thinking + answer: s1's max_gen_toks=32768
# What a client may ask, each bounded by a flag of its own (defaults in parse_args); exceeding one
# is a 400 (413 for the body), never a server held for minutes.
LIMITS = dict(max_body_bytes=4_000_000, max_message_chars=400_000, max_ignore_str_chars=64,
              max_n=16)
# OpenAI's fields that we honour, and those we accept because they change nothing here (model: one
# model is served; user: an end-user id for logs). Any other field asks for something we do not
# do: a 400.
# Budget forcing comes as the fields of sample.Setting (max_thinking_tokens, num_ignore, ignore_str,
# min_thinking_tokens, control, ...): a field added there is served too. Not served: rejection
# sampling's tries (a request would hold the engine for up to 1,000 samples), its own temperature
# (OpenAI's field is the one) and think (a chat model here always thinks).
SETTING_FIELDS = sorted({f.name for f in dataclasses.fields(sample.Setting)}
                        - {"tries", "own_temperature", "think"})
FIELDS = {"messages", "temperature", "top_p", "seed", "n", "stop", "stream", "max_tokens",
          "max_completion_tokens", "model", "user", *SETTING_FIELDS}

# ----------------------------------------------------------------------------------------------
# The server's path: load the model, serve, step the engine

def main(argv=None):
    args = parse_args(argv)
    # one replica: every process in one tensor-parallel group (a server of replicas would need a
    # router in front of them; run one server per group of GPUs behind a load balancer instead)
    model, tokenizer, world, rank = sample.load_for_generation(
        args.model, args.device, args.dtype, args.max_tokens, args.batch_size, args.tokenizer,
        args.dist_timeout_min, tp=parallel.WORLD)
    # tensor parallel: rank 0 serves and tells the others what changes each step, on a CPU (gloo)
    # group that may wait as long as the server is idle (an NCCL collective would time out)
    control = (dist.new_group(backend="gloo", timeout=datetime.timedelta(days=365)) if world > 1
               else None)
    if rank != 0:
        runner = engine.Engine(model, args.max_tokens, args.batch_size, len(tokenizer),
                               args.kv_memory_gb)
        return follow(runner, tokenizer, control)
    limits = {k: getattr(args, k) for k in LIMITS}
    server = make_server(model, tokenizer, args.host, args.port, args.model, args.max_tokens,
                         args.batch_size, args.kv_memory_gb, start_engine=False, control=control,
                         limits=limits, request_timeout=args.request_timeout)
    url = f"http://{args.host}:{server.server_address[1]}/v1/chat/completions"
    print(f"serving {args.model} on {url}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The engine steps on the main thread: on a CPU, torch ops called from another thread ran 1.3x
    # slower here (measured: the same decode, 3.5 s on the main thread, 4.5-5.3 s on a second one).
    server.engine_thread.run()


# ----------------------------------------------------------------------------------------------
# Requests, the engine thread, the HTTP handler

def parse_request(req, context=MAX_TOKENS, limits=LIMITS):
    """The generation a request asks for (a dict), or ValueError saying what is wrong."""
    if not isinstance(req, dict):
        raise ValueError("the body must be a JSON object")
    unsupported = sorted(k for k, v in req.items() if k not in FIELDS and v not in (None, False))
    if unsupported:
        raise ValueError(f"unsupported field(s): {', '.join(map(repr, unsupported))}")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError("each message needs a role (system, user or assistant) and a string "
                             "content")
    users, systems = ([m for m in messages if m["role"] == role] for role in ("user", "system"))
    if len(users) != 1 or messages[-1]["role"] != "user" or len(systems) > 1 \
            or len(messages) != len(users) + len(systems):
        raise ValueError("s1 is single-turn: send one user message, last, after at most one "
                         "system message")
    if sum(len(m["content"]) for m in messages) > limits["max_message_chars"]:
        raise ValueError(f"the messages are longer than {limits['max_message_chars']:,} characters "
                         "(--max-message-chars)")
    number = (int, float)
    job = dict(question=users[0]["content"],
               system=systems[0]["content"] if systems else chat.SYSTEM, temperature=0.0,
               top_p=1.0, seed=None, n=1, stop=[], stream=False)
    checks = (("temperature", number, lambda v: 0 <= v <= 100),
              ("top_p", number, lambda v: 0 < v <= 1),
              ("seed", int, lambda v: True),
              ("n", int, lambda v: 1 <= v <= limits["max_n"]),
              ("stream", bool, lambda v: True))
    for name, kind, ok in checks:
        if name in req:
            value = req[name]
            wrong_type = not isinstance(value, kind) or kind is not bool and isinstance(value, bool)
            if wrong_type or not ok(value):
                hint = {"n": f" (1 to {limits['max_n']}, --max-n)"}.get(name, "")
                raise ValueError(f"invalid '{name}': {value!r}" + hint)
            job[name] = value
    stop = req.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) \
                or len(stop) > 4:
            raise ValueError(f"invalid 'stop': {req['stop']!r} (a string or up to 4 strings)")
        job["stop"] = stop
    # the Setting checks its own fields: ValueError("invalid 'num_ignore': -1 (...)")
    job["setting"] = sample.setting_from({k: req[k] for k in SETTING_FIELDS if k in req})
    if len(job["setting"].ignore_str) > limits["max_ignore_str_chars"]:
        raise ValueError(f"invalid 'ignore_str': a string of up to "
                         f"{limits['max_ignore_str_chars']} characters")
    limit = req.get("max_completion_tokens", req.get("max_tokens"))
    if limit is not None and not (is_int(limit) and 1 <= limit <= context):
        raise ValueError(f"invalid 'max_tokens': {limit!r} (1 to the context, {context})")
    job["limit"] = limit
    for text in [job["question"], job["system"], job["setting"].ignore_str, *job["stop"]]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, no tokenizer encodes it
            raise ValueError("a string is not valid Unicode (a lone surrogate)") from None
    return job


def is_int(value):
    """A JSON integer: an int that is not a bool (True is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Job:
    """One HTTP request in the engine: its rows (one per choice), made by sample.make_rows from
    fields (which rank 0 sends to the other ranks), and the events the engine thread sends to the
    HTTP thread that waits for them."""

    def __init__(self, prompt, fields, rows, watch):
        self.prompt, self.fields, self.rows = prompt, fields, rows
        self.watch = watch  # the HTTP thread wants every token (streaming, stop strings)
        self.events = queue.Queue()


class EngineThread(threading.Thread):
    """Owns the engine: takes new jobs and cancelled rows between steps, and steps while anything
    runs."""

    def __init__(self, engine, control=None):
        super().__init__(daemon=True)
        self.engine, self.owner = engine, {}  # owner: id(row) -> job
        # from the HTTP threads: jobs, and lists of rows
        self.inbox, self.cancelled = queue.Queue(), queue.Queue()
        # tensor parallel: rows named across ranks
        self.control, self.uid, self.next_uid = control, {}, 0
        engine.on_token = self.on_token

    def cancel(self, rows):
        self.cancelled.put(rows)
        self.inbox.put(None)  # wake the loop if it sleeps

    def on_token(self, row):
        job = self.owner.get(id(row))
        if job and job.watch:
            job.events.put(("token", row))

    def run(self):
        while True:
            # idle: sleep until a job comes
            new = [self.inbox.get()] if not self.engine.busy() else []
            while not self.inbox.empty():
                new.append(self.inbox.get())
            new, gone = list(filter(None, new)), []
            while not self.cancelled.empty():
                gone += [r for r in self.cancelled.get() if self.owner.pop(id(r), None)]
            # tensor parallel: the other ranks make the same changes before the same step
            if self.control is not None:
                for job in new:
                    self.uid.update((id(r), self.next_uid + i) for i, r in enumerate(job.rows))
                    self.next_uid += len(job.rows)
                changes = [[(job.prompt, job.fields, [self.uid[id(r)] for r in job.rows])
                            for job in new],
                           [self.uid.pop(id(r)) for r in gone]]
                dist.broadcast_object_list([changes], src=0, group=self.control)
            for job in new:
                self.engine.add(job.prompt, job.rows)
                self.owner.update((id(r), job) for r in job.rows)
            self.engine.cancel(gone)
            try:
                finished = self.engine.step()
            except Exception as e:  # never leave a client waiting: fail every job, keep serving
                jobs = {id(j): j for j in self.owner.values()}.values()
                for job in jobs:
                    self.engine.cancel(job.rows)
                    job.events.put(("error", f"{type(e).__name__}: {e}"))
                self.owner.clear()
                continue
            for row in finished:
                self.uid.pop(id(row), None)
                job = self.owner.pop(id(row), None)
                if job:
                    job.events.put(("done", row))


def follow(engine, tokenizer, control):
    """A tensor-parallel rank other than 0: every step, make the changes rank 0 made to its engine
    (new requests, cancelled rows), then step with it; rank 0 alone talks HTTP."""
    rows = {}  # uid -> row
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=control)  # waits as long as rank 0 is idle
        new, gone = box[0]
        for prompt, fields, uids in new:
            job_rows = sample.make_rows(tokenizer, **fields)
            rows.update(zip(uids, job_rows))
            engine.add(prompt, job_rows)
        engine.cancel([rows.pop(u) for u in gone if u in rows])
        try:
            finished = engine.step()
        except Exception:  # rank 0 failed the same step: drop everything, as it does
            engine.cancel(list(rows.values()))
            rows.clear()
            continue
        done = set(map(id, finished))
        rows = {u: r for u, r in rows.items() if id(r) not in done}


def client_gone(sock):
    """True if the client closed its end (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection: parses, hands the job to the engine thread, waits and writes. What it
    needs is on its server (make_server)."""

    @property
    def timeout(self):
        """A socket timeout: a client that sends less than its Content-Length, or nothing, holds a
        thread for this long, not forever."""
        return self.server.request_timeout

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, code, message):
        kind = "invalid_request_error" if code < 500 else "server_error"
        self.send(code, {"error": {"message": message, "type": kind}})

    def do_GET(self):
        if self.path == "/v1/models":
            models = [{"id": self.server.name, "object": "model"}]
            return self.send(200, {"object": "list", "data": models})
        self.error(404, f"no route {self.path}")

    def do_POST(self):
        self.streaming = False
        try:
            self.post()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug of ours: answer it (unless a stream has begun), keep serving
            if not self.streaming:
                self.error(500, f"{type(e).__name__}: {e}")

    def post(self):
        limits = self.server.limits
        if self.path != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        try:
            size = int(self.headers.get("Content-Length", 0))
        except ValueError:
            return self.error(400, "Content-Length is not a number")
        if not 0 <= size <= limits["max_body_bytes"]:
            self.close_connection = True  # the body is left unread
            return self.error(413, f"the body may have at most {limits['max_body_bytes']:,} bytes "
                                   "(--max-body-bytes)")
        try:
            body = self.rfile.read(size)
        except TimeoutError:  # fewer bytes than Content-Length said, and the client waits
            self.close_connection = True
            timeout = self.server.request_timeout
            return self.error(408, f"the body did not arrive within {timeout} s")
        try:
            spec = parse_request(json.loads(body or b"null"), self.server.context, limits)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            return self.error(400, str(e))
        except RecursionError:
            return self.error(400, "the JSON is nested too deeply")
        self.complete(spec)

    def start(self, spec):
        """The request's job, handed to the engine thread; None (with a 400 sent) if its prompt
        leaves no room."""
        tokenizer, context = self.server.tokenizer, self.server.context
        text = spec["setting"].prompt_text(spec["question"], spec["system"])
        prompt = tokenizer.encode(text, add_special_tokens=False)
        if len(prompt) >= context:
            return self.error(400, f"the prompt has {len(prompt)} tokens, the context {context}: "
                                   "no room to generate")
        seed = spec["seed"] if spec["seed"] is not None else random.getrandbits(62)
        max_len = context if spec["limit"] is None else min(context, len(prompt) + spec["limit"])
        fields = dict(question=spec["question"], prompt_len=len(prompt), max_len=max_len,
                      settings=[spec["setting"]], samples=range(spec["n"]),
                      temperature=spec["temperature"], top_p=spec["top_p"], seed=seed)
        job = Job(prompt, fields, sample.make_rows(tokenizer, **fields),
                  watch=spec["stream"] or bool(spec["stop"]))
        self.server.engine_thread.inbox.put(job)
        return job

    def complete(self, spec):
        job = self.start(spec)
        if job is None:
            return
        worker, rows, stream = self.server.engine_thread, job.rows, spec["stream"]
        head = dict(id=f"chatcmpl-{time.time_ns()}", created=int(time.time()),
                    model=self.server.name)
        choices = [Choice(self.server.tokenizer, spec["stop"]) for _ in rows]
        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.streaming = True
            for i in range(len(rows)):
                self.event(head, i, {"role": "assistant"})
        open_rows, checked = len(rows), time.time()
        while open_rows:
            try:
                kind, row = job.events.get(timeout=0.5)
            except queue.Empty:
                kind = None
            if time.time() - checked > 0.5:  # every half second, streaming or not
                checked = time.time()
                if client_gone(self.connection):  # nobody to answer: free the rows
                    return worker.cancel(rows)
            if kind is None:
                continue
            if kind == "error":
                if not stream:
                    return self.error(500, row)
                error = {"error": {"message": row, "type": "server_error"}}
                self.wfile.write(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
                return
            choice = choices[row.index]
            if choice.closed:
                continue
            deltas = choice.update(row, final=kind == "done")
            if choice.closed and kind != "done":  # a stop string: this choice needs no more tokens
                worker.cancel([row])
            if stream:
                try:
                    for delta in deltas:
                        self.event(head, row.index, delta)
                    if choice.closed:
                        self.event(head, row.index, {}, choice.finish_reason)
                except OSError:
                    return worker.cancel(rows)
            open_rows -= choice.closed
        if stream:
            self.wfile.write(b"data: [DONE]\n\n")
            return
        generated, prompt_tokens = sum(len(c.tokens) for c in choices), len(job.prompt)
        answers = [{"index": i,
                    "message": {"role": "assistant", "content": c.content,
                                "reasoning_content": c.thinking},
                    "finish_reason": c.finish_reason} for i, c in enumerate(choices)]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                 "total_tokens": prompt_tokens + generated}
        self.send(200, dict(head, object="chat.completion", choices=answers, usage=usage))

    def event(self, head, index, delta, finish=None):
        choices = [{"index": index, "delta": delta, "finish_reason": finish}]
        body = dict(head, object="chat.completion.chunk", choices=choices)
        self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, fmt, *args):  # one quiet line per request
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


class Server(ThreadingHTTPServer):
    # socketserver's 5 makes the kernel drop a burst of connections, retried a second later
    request_queue_size = 128
    daemon_threads = True


def make_server(model, tokenizer, host="127.0.0.1", port=8000, name="s1", context=MAX_TOKENS,
                max_rows=64, kv_memory_gb=None, start_engine=True, control=None, limits=LIMITS,
                request_timeout=60):
    """A ThreadingHTTPServer whose requests run on one engine loop, server.engine_thread: started
    here as a thread, or (start_engine=False) left for the caller to run(), e.g. on the main
    thread. control: under tensor parallelism, the process group on which rank 0 tells the others
    each step. request_timeout: seconds a connection may stall (sending its request, or reading a
    stream) before it is closed."""
    runner = engine.Engine(model, context, max_rows, len(tokenizer), kv_memory_gb)
    worker = EngineThread(runner, control)
    if start_engine:
        worker.start()
    server = Server((host, port), Handler)
    server.engine_thread, server.tokenizer = worker, tokenizer
    server.name, server.context = name, context
    server.limits, server.request_timeout = limits, request_timeout
    return server


class Choice:
    """What one choice has said so far: its thinking and its content (cut at a stop string). Only
    new tokens are decoded, and only whole characters are sent."""

    def __init__(self, tokenizer, stops):
        self.tokenizer, self.stops = tokenizer, stops
        self.tokens, self.thinking, self.content = [], "", ""
        self.answer = ""  # all the answer text decoded so far; content: what has been released
        self.thinking_sent = self.answer_sent = 0  # tokens already turned into text
        self.closed, self.finish_reason = False, None

    def update(self, row, final):
        """Read the row's new tokens; return the deltas to stream."""
        decode = lambda toks: self.tokenizer.decode(toks, skip_special_tokens=False)
        self.tokens = row.tokens[:]  # a snapshot: the engine thread appends to row.tokens
        deltas = []
        thought = min(row.thinking_tokens, len(self.tokens))
        if thought > self.thinking_sent:
            text = decode(self.tokens[self.thinking_sent:thought])
            if final or not text.endswith("\ufffd"):
                self.thinking, self.thinking_sent = self.thinking + text, thought
                deltas.append({"reasoning_content": text})
        start, end = sample.answer_span(row)
        start, end = max(start, self.answer_sent), min(end, len(self.tokens))
        if start < end:
            text = decode(self.tokens[start:end])
            if final or not text.endswith("\ufffd"):
                self.answer, self.answer_sent = self.answer + text, end
        cut = min((c for c in (self.answer.find(s) for s in self.stops) if c >= 0), default=-1)
        if cut >= 0:  # a stop string: the content ends before it
            final, self.finish_reason = True, "stop"
            release = cut
        elif final:
            release = len(self.answer)
        else:  # hold back a tail that could be the start of a stop string
            release = len(self.answer) - max((k for s in self.stops for k in range(1, len(s))
                                              if self.answer.endswith(s[:k])), default=0)
        if release > len(self.content):
            deltas.append({"content": self.answer[len(self.content):release]})
            self.content = self.answer[:release]
        if final:
            self.closed = True
            self.finish_reason = self.finish_reason or ("stop" if row.finished else "length")
        return deltas


# ----------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="hub name or local checkpoint directory")
    p.add_argument("--tokenizer", default=None, help="default: the model's")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=cli.between(0, 65535, int), default=8000)
    p.add_argument("--max-tokens", type=cli.at_least(2), default=MAX_TOKENS,
                   help="context: prompt + thinking + answer")
    p.add_argument("--batch-size", type=cli.at_least(1), default=64,
                   help="most sequences decoded together")
    p.add_argument("--kv-memory-gb", type=cli.above(0), default=None,
                   help="KV pool size (default: as sample.py)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                   help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--dist-timeout-min", type=cli.above(0), default=60,
                   help="torchrun: timeout of the model's collectives (torch's default, 10 min, is "
                        "less than loading 32B may take)")
    p.add_argument("--max-body-bytes", type=cli.at_least(1), default=LIMITS["max_body_bytes"],
                   help="larger: HTTP 413")
    p.add_argument("--max-message-chars", type=cli.at_least(1), default=LIMITS["max_message_chars"],
                   help="the messages' total length (a 32K-token context holds ~100K characters "
                        "of text)")
    p.add_argument("--max-ignore-str-chars", type=cli.at_least(0),
                   default=LIMITS["max_ignore_str_chars"])
    p.add_argument("--max-n", type=cli.at_least(1), default=LIMITS["max_n"],
                   help="choices per request")
    p.add_argument("--request-timeout", type=cli.above(0), default=60,
                   help="seconds a connection may stall (sending its request, reading a stream) "
                        "before it is closed")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli.main(main)
