"""serve.py: the OpenAI-compatible server on the engine. Requests join one running batch, so 8
concurrent clients must get exactly what 8 serial requests get; n, stop and seed are honoured; a
client that leaves frees its rows; bad requests get a 400 and the server keeps serving."""
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
from conftest import tiny_hf_model

import sample
import serve
from machinery import chat, hf_checkpoint

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-serve")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=3).save_pretrained(path)
    tokenizer = chat.build_byte_tokenizer(str(path))
    return hf_checkpoint.from_pretrained(str(path), dtype=torch.float32), tokenizer


def start(model, tokenizer, **kw):
    server = serve.make_server(model, tokenizer, port=0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"


def post(url, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ask(content, **fields):
    return {"messages": [{"role": "user", "content": content}], **fields}


def test_round_trip_streaming_and_bad_requests(bigram):
    model, tokenizer = bigram
    server, url = start(model, tokenizer, context=300)
    try:
        body = ask("q", num_ignore=2, max_tokens=150)
        code, text = post(url, body)
        assert code == 200
        message = json.loads(text)["choices"][0]["message"]
        direct = sample.generate(model, tokenizer, ["q"], num_ignore=2, max_tokens=300,
                                 progress=False)[0]
        assert message["reasoning_content"] == direct["thinking"]
        assert message["content"] == direct["answer"]
        code, text = post(url, dict(body, stream=True))
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == direct["thinking"]
        assert "".join(d.get("content", "") for d in deltas) == direct["answer"]
        assert text.rstrip().endswith("data: [DONE]")
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        two_users = {"messages": [{"role": "user", "content": "a"},
                                  {"role": "user", "content": "b"}]}
        for bad in (b"not json", {"messages": []}, {"messages": [{"role": "user"}]},
                    ask("q", temperature=-1), ask("q", max_thinking_tokens="lots"),
                    ask("q", stream="yes"), ask("q", n=0), ask("q", max_thinking_tokens=True),
                    ask("q", stop=[""]), two_users,
                    ask("q" * 400)):  # longer than the context
            code, text = post(url, bad)
            assert code == 400 and "message" in json.loads(text)["error"], bad
        assert post(url, body)[0] == 200  # still serving
    finally:
        server.shutdown()


def test_stop_strings_end_the_content(bigram):
    model, tokenizer = bigram
    server, url = start(model, tokenizer, context=300)
    try:  # the answer is "\n7": stopping at "7" leaves "\n"
        choice = json.loads(post(url, ask("q", stop="7"))[1])["choices"][0]
        assert choice["message"]["content"] == "\n" and choice["finish_reason"] == "stop"
        text = post(url, ask("q", stop=["7"], stream=True))[1]
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "\n"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    finally:
        server.shutdown()


def test_concurrent_clients_get_what_serial_ones_get_and_n_and_seed_are_honoured(tiny):
    model, tokenizer = tiny
    server, url = start(model, tokenizer, context=300)
    bodies = [ask(f"Question number {i}: what is {i} + {i}?", max_thinking_tokens=5 + 7 * i,
                  max_tokens=120, num_ignore=i % 2) for i in range(8)]
    threads_before = threading.active_count()
    try:
        serial = [post(url, b) for b in bodies]
        concurrent = [None] * 8

        def client(i):
            concurrent[i] = post(url, bodies[i])
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        message = lambda r: json.loads(r[1])["choices"][0]["message"]
        assert all(r[0] == 200 for r in serial + concurrent)
        assert [message(r) for r in concurrent] == [message(r) for r in serial]
        # n choices share the prompt; a seed makes them repeatable; no seed draws afresh
        sampled = ask("Tell me a story.", n=3, temperature=1.0, max_tokens=40)
        texts = lambda r: [c["message"]["reasoning_content"] + c["message"]["content"]
                           for c in json.loads(r[1])["choices"]]
        a, b = texts(post(url, dict(sampled, seed=5))), texts(post(url, dict(sampled, seed=5)))
        assert a == b and len(set(a)) == 3
        assert texts(post(url, sampled)) != texts(post(url, sampled))
        time.sleep(0.2)
        assert threading.active_count() <= threads_before + 1  # no thread left behind per request
    finally:
        server.shutdown()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_its_rows(tiny, stream):
    """A request that would think for 3,000 tokens: its client disconnects, and the engine is idle
    again long before the generation could have finished."""
    model, tokenizer = tiny
    server, url = start(model, tokenizer, context=3200)
    engine = server.engine_thread.engine
    try:
        body = json.dumps(ask("Think forever.", num_ignore=10 ** 6, stream=stream)).encode()
        sock = socket.create_connection(("127.0.0.1", server.server_address[1]))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        deadline = time.time() + 10
        while not engine.running and time.time() < deadline:
            time.sleep(0.01)
        assert engine.running, "the request never started"
        time.sleep(0.3)
        started = time.time()
        sock.close()
        while engine.busy() and time.time() - started < 5:
            time.sleep(0.05)
        assert not engine.busy() and engine.steps < 2500
        assert len(engine.pool.free) == len(engine.pool.refs)  # every block back in the pool
    finally:
        server.shutdown()


@pytest.mark.parametrize("processes", [1, 2])
def test_command_line_serves_alone_and_tensor_parallel(tmp_path, processes):
    """serve.py as a user starts it: one process (the engine on its main thread), or two under
    torchrun (rank 0 serves and tells rank 1 each step). Three concurrent clients get what
    generate gives in this process."""
    import os
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    hf_model = tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=3)
    hf_model.save_pretrained(tmp_path)
    tokenizer = chat.build_byte_tokenizer(str(tmp_path))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    launcher = ([sys.executable] if processes == 1
                else [torchrun, "--standalone", "--nproc-per-node", "2"])
    command = ["serve.py", "--model", str(tmp_path), "--port", "0", "--max-tokens", "300"]
    proc = subprocess.Popen(launcher + command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        line = ""
        while not line.startswith("serving "):
            line = proc.stdout.readline()
            assert line, "serve.py exited before serving"
        url = line.split(" on ")[1].strip()
        questions = ["What is 2+3?", "Why?", "Name a prime."]
        replies = [None] * 3

        def client(i):
            replies[i] = post(url, ask(questions[i], max_thinking_tokens=9 + 5 * i,
                                       max_tokens=60))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        model = hf_checkpoint.from_pretrained(str(tmp_path), dtype=torch.float32)
        for i, (code, text) in enumerate(replies):
            text_in = chat.prompt_text(questions[i]) + chat.THINK
            prompt = len(tokenizer.encode(text_in, add_special_tokens=False))
            direct = sample.generate(model, tokenizer, [questions[i]],
                                     max_thinking_tokens=9 + 5 * i, max_tokens=prompt + 60,
                                     progress=False)[0]
            message = json.loads(text)["choices"][0]["message"]
            assert code == 200
            assert (message["reasoning_content"], message["content"]) == (direct["thinking"],
                                                                          direct["answer"])
    finally:
        # SIGTERM first: torchrun passes it on to its workers, which a SIGKILL to torchrun would
        # orphan
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_stop_string_split_across_tokens_is_never_sent():
    """The byte tokenizer gives one token per character, so a stop string of two characters is
    split across two tokens: its first character must be held back, not streamed."""
    class Row:  # what Choice reads of an engine row
        def __init__(self, text):
            self.tokens, self.thinking_tokens, self.answer_start, self.finished = [], 0, 0, False
            self.text = text
    tokenizer = chat.build_byte_tokenizer(__import__("tempfile").mkdtemp())
    choice, row, sent = serve.Choice(tokenizer, ["EN", "xyz"]), Row("abcENDfg"), []
    for ch in row.text:  # one token at a time, as the engine streams them
        row.tokens += tokenizer.encode(ch, add_special_tokens=False)
        sent += [d["content"] for d in choice.update(row, final=False) if "content" in d]
        if choice.closed:
            break
    assert choice.closed and choice.finish_reason == "stop"
    assert "".join(sent) == choice.content == "abc"  # neither "E" nor "EN" was ever sent


def raw(port, data, timeout=10):
    """Send bytes, return the reply's bytes (b"" if the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        return reply


def wait_for(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)


def http(body, length=None):
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body) if length is None else length).encode()
            + b"\r\n\r\n" + body)


def test_no_request_blocks_or_crashes_the_server(tiny):
    """The probe's bad requests, each answered with a JSON error naming the problem, within the
    limits; stalled clients hold a thread only until the timeout; the answer to a good request is
    the same before and after, and a system message is used."""
    model, tokenizer = tiny
    limits = dict(max_body_bytes=20_000, max_message_chars=2_000, max_ignore_str_chars=8, max_n=2)
    server, url = start(model, tokenizer, context=300, max_rows=4, limits=limits, request_timeout=3)
    port = server.server_address[1]
    good = ask("What is 2+2?", max_thinking_tokens=8, max_tokens=40)
    try:
        first = post(url, good)
        assert first[0] == 200
        threads = threading.active_count()
        bad = [  # (body, status, what the error says)
            (b"{" + b" " * 30_000 + b"}", 413, "--max-body-bytes"),
            (ask("q" * 2_001), 400, "--max-message-chars"),
            (ask("q", ignore_str="Wait " * 20), 400, "ignore_str"),
            (ask("q", max_tokens=301), 400, "max_tokens"),
            (ask("q", n=3), 400, "--max-n"),
            (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
            (b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', 400, "surrogate"),
            (b"[" * 10_000, 400, "nested"),
            (ask("q", stream="yes"), 400, "stream"),
            (ask("q", max_thinking_tokens=True), 400, "max_thinking_tokens"),
            (b'{"messages": [{"role": "user", "content": "q"}], "temperature": Infinity}', 400,
             "temperature"),
            (ask("q", logprobs=True), 400, "'logprobs'"),
            (ask("q", tools=[{"type": "function"}]), 400, "'tools'"),
            (ask("q", response_format={"type": "json_object"}), 400, "'response_format'"),
            ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}]}, 400, "single-turn"),
        ]
        for body, status, says in bad:
            code, text = post(url, body)
            assert code == status and says in json.loads(text)["error"]["message"], (
                str(body)[:80], code, text)
        reply = raw(port, http(b"{}", length=10 ** 12))
        assert reply.startswith(b"HTTP/1.0 413") and b"--max-body-bytes" in reply
        # 30 clients announce 100 bytes and send 11: each gets a 408 after the 3 s timeout, and the
        # threads they held are gone
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        for s in stalled:
            s.sendall(http(b'{"messages"', length=100))
        wait_for(lambda: threading.active_count() >= threads + 30, 2)
        assert threading.active_count() >= threads + 30
        for s in stalled:
            s.settimeout(10)
            assert s.recv(100).startswith(b"HTTP/1.0 408")
            s.close()
        wait_for(lambda: threading.active_count() <= threads + 1, 3)
        assert threading.active_count() <= threads + 1
        answer = lambda reply: (reply[0], json.loads(reply[1])["choices"])
        # the same answer, greedy, as before any of this
        assert answer(post(url, good)) == answer(first)
        brief = [{"role": "system", "content": "Be brief."}, *good["messages"]]
        system = json.loads(post(url, dict(good, messages=brief))[1])
        expected = tokenizer.encode(chat.prompt_text("What is 2+2?", "Be brief.")
                                    + chat.completion_text(), add_special_tokens=False)
        without = json.loads(first[1])["usage"]["prompt_tokens"]
        assert system["usage"]["prompt_tokens"] == len(expected) != without
    finally:
        server.shutdown()


def test_every_setting_field_is_a_request_field(bigram):
    """A request's budget forcing is a sample.Setting: min_thinking_tokens, added to Setting as one
    field, is served with no change here and gives what sample.generate gives; the Setting names
    its bad field; rejection sampling's tries are not served."""
    model, tokenizer = bigram
    server, url = start(model, tokenizer, context=300)
    try:
        code, text = post(url, ask("q", min_thinking_tokens=6, max_tokens=200))
        direct = sample.generate(model, tokenizer, ["q"], settings=[
            sample.Setting(min_thinking_tokens=6)], max_tokens=300, progress=False)[0]
        message = json.loads(text)["choices"][0]["message"]
        assert code == 200 and message["reasoning_content"] == direct["thinking"] != "abc"
        for body, says in ((ask("q", num_ignore=-1), "invalid 'num_ignore'"),
                           (ask("q", control="tokens"), "invalid 'control_value'"),
                           (ask("q", tries=3), "unsupported field(s): 'tries'"),
                           (ask("q", control=[]), "invalid 'control'")):
            code, text = post(url, body)
            assert code == 400 and says in json.loads(text)["error"]["message"], text
    finally:
        server.shutdown()
