"""api.py: an OpenAI-compatible chat client in a few lines of urllib, with retries, and a thread
pool that saves each reply the moment it arrives. prepare.py distills traces through it
(DeepSeek-R1's API, or any OpenAI-compatible server such as serve.py); curate.py asks its grader
and domain classifier (s1 used Claude 3.5 Sonnet for both).

    message = chat_completion("https://api.deepseek.com", "deepseek-reasoner",
                              [{"role": "user", "content": question}], "DEEPSEEK_API_KEY")
"""
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed


class BadCredentials(Exception):
    pass


RETRIES, BACKOFF_S = 5, 2.0  # a failed request is retried 5 times, after 2, 4, 8, 16, 32 s


def chat_completion(base_url, model, messages, key_env, timeout=1800, **extra):
    """The reply's message. Rate limits, server errors and dropped connections are retried RETRIES
    times with exponential back-off; HTTP 401/403 raise BadCredentials at once (retrying cannot
    help)."""
    retries = RETRIES
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if os.environ.get(key_env):
        headers["Authorization"] = "Bearer " + os.environ[key_env]
    body = json.dumps({"model": model, "messages": messages, **extra}).encode()
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, body, headers)
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return json.loads(r.read())["choices"][0]["message"]
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                unset = "" if os.environ.get(key_env) else f" (${key_env} is not set)"
                raise BadCredentials(f"{url}: HTTP {e.code} {e.reason}: "
                                     f"check the API key in ${key_env}{unset}") from None
            if (e.code < 500 and e.code not in (408, 409, 429)) or attempt == retries:
                text = e.read()[:300].decode(errors="replace")
                raise RuntimeError(f"HTTP {e.code}: {text}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt == retries:
                raise RuntimeError(f"{url}: {e}") from None
        time.sleep(BACKOFF_S * 2 ** attempt)


def ask_all(tasks, ask, save, workers, what):
    """ask(task) for every task, `workers` at a time on threads (HTTP only: eval.py's grader uses
    signal.alarm, so whatever grades stays in the main thread), and save(result) here in the main
    thread as each one arrives, so that a crash or Ctrl-C loses only the requests in flight. Bad
    credentials stop it at once, in one line."""
    pool = ThreadPoolExecutor(workers)
    try:
        for i, future in enumerate(as_completed([pool.submit(ask, t) for t in tasks]), 1):
            save(future.result())
            if i % 100 == 0 or i == len(tasks):
                print(f"{what}: {i} of {len(tasks)}", flush=True)
    except BadCredentials as e:
        raise SystemExit(str(e))
    finally:  # on Ctrl-C too: stop asking; every saved reply stays in the cache
        pool.shutdown(wait=False, cancel_futures=True)
