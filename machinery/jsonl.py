"""jsonl.py: the one rule for the JSONL files the stages read and resume, and the atomic writer.

Reading: blank lines are skipped. A torn last line (no trailing newline and not valid JSON: what a
kill in the middle of a write leaves) is dropped and reported in one line on stderr; an unreadable
line anywhere else is an error naming the file and the line (a one-line SystemExit).
Resuming an output that is appended to a line at a time (sample.py --output, eval.py's
samples.jsonl, prepare.py's distill cache, curate.py's feature caches, train.py's log): read as
above, then the torn tail, and only it, is cut from the file, so that the next line starts on a
line of its own. Nothing already written is ever rewritten away.
Writing a whole file: to a temporary file beside it, then renamed over it, so that a crash never
leaves half a file under the real name.
"""
import contextlib
import gzip
import hashlib
import json
import os
import sys
import zlib


def numbered(path):
    """(line number, record) for every line of a .jsonl or .jsonl.gz file, by the rule above. Each
    record must be a JSON object; a line that is not UTF-8 is an unreadable line."""
    if os.path.isdir(path):
        raise SystemExit(f"{path}: a directory, not a JSONL file")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    # a whole line: only a line with no newline can be the torn last one
                    if line.endswith(b"\n"):
                        if isinstance(e, json.JSONDecodeError):
                            why = f"{e.msg} at column {e.colno}"
                        else:
                            why = f"not UTF-8 text, byte {e.start + 1}"
                        raise SystemExit(f"{path} line {n}: not valid JSON ({why}); "
                                         "fix or remove that line") from None
                    print(f"{path} line {n}: dropping a half-written last line", file=sys.stderr)
                    return
                if not isinstance(record, dict):
                    raise SystemExit(f"{path} line {n}: a JSON {type(record).__name__}, "
                                     "not an object ({...})")
                yield n, record
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise SystemExit(f"{path}: not a readable gzip file ({e})") from None


def read_jsonl(path):
    return [r for _, r in numbered(path)]


def read_json(path):
    """A small JSON file beside an output (its config), or {} when there is none yet."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_records(path):
    """The records of a local .jsonl, .jsonl.gz or .json (one list of objects) file."""
    if path.endswith(".json") and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                records = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SystemExit(f"{path}: not valid JSON ({e})") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SystemExit(f"{path}: not a JSON list of objects")
        return records
    return read_jsonl(path)


def local_or_hub(source, config=None, split="train", flag=None, hint=None):
    """The records of a local .jsonl, .jsonl.gz, .json or .parquet file, else of a hub dataset (or
    a directory in the hub's layout) through the datasets library, which offline reads its cache.
    flag: the command-line flag that named source, hint: what to do instead, for the error
    message."""
    name = f"{flag} {source}" if flag else source
    parquet = source.endswith(".parquet")
    if source.endswith((".jsonl", ".jsonl.gz", ".json")) or os.path.isfile(source) and not parquet:
        if not os.path.exists(source):
            raise SystemExit(f"{name}: no such file")
        return read_input(source)
    import datasets
    try:
        if parquet:
            records = datasets.load_dataset("parquet", data_files=source, split="train")
        else:
            records = datasets.load_dataset(source, config, split=split)
    except Exception as e:
        raise SystemExit(f"{name}: not a local file and cannot be loaded from the hub "
                         f"({type(e).__name__}: {e})" + (f"; {hint}" if hint else ""))
    return list(records)


def read_input(path):
    """read_records for a stage's input, which must hold at least one record."""
    records = read_records(path)
    if not records:
        raise SystemExit(f"{path}: no records (the file is empty or blank)")
    return records


def read_questions(path, what="records"):
    """A stage's input records (at least one), each with a non-empty string 'question':
    prepare.py's pool, distill's output, curate.py's featurized pool."""
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no such file ({what})")
    records = read_input(path)
    for i, r in enumerate(records):
        if not isinstance(r.get("question"), str) or not r["question"].strip():
            raise SystemExit(f"{path} record {i}: needs a non-empty string 'question'")
    return records


def question_hash(question):
    """s1's key for a question in the caches (distill's, curate's): the first 16 hex digits of its
    sha256."""
    return hashlib.sha256(question.encode()).hexdigest()[:16]


def resume(path):
    """The records of an output that a run appends to, none before its first run. Its torn last
    line is dropped (and reported) and cut from the file; nothing else of the file is touched."""
    if not os.path.exists(path):
        return []
    records = read_jsonl(path)  # stops at an unreadable line but the last, before any change
    cut_torn_tail(path)
    return records


def cut_torn_tail(path):
    """Cut what follows the last newline if it is not valid JSON; end it with a newline if it is."""
    with open(path, "rb+") as f:
        end, tail = f.seek(0, os.SEEK_END), b""
        while len(tail) < end and b"\n" not in tail:  # back to the last newline, a block at a time
            step = min(end - len(tail), 1 << 16)
            f.seek(end - len(tail) - step)
            tail = f.read(step) + tail
        tail = tail.rsplit(b"\n", 1)[-1]  # b"" in a clean file
        if tail.strip() and not parses(tail):
            f.truncate(end - len(tail))
        elif tail:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")


def parses(line):
    try:
        json.loads(line)
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def same_config(config_path, config, hint, defaults=None, ignore=(), upgrade=None):
    """Stop if config_path, saved beside a resumable output, holds another config than config: an
    output resumed with another config would mix records made two ways. The message names each
    change. defaults: the value of a key that older files do not hold; ignore: keys not
    compared; upgrade: a function that brings an older file's config to today's form."""
    if not os.path.exists(config_path):
        return
    with open(config_path, encoding="utf-8") as f:
        old = {**(defaults or {}), **json.load(f)}
    old = upgrade(old) if upgrade else old
    changed = [f"{k} {old.get(k)!r} (now {v!r})" for k, v in config.items()
               if old.get(k) != v and k not in ignore]
    if changed:
        raise SystemExit(f"{config_path}: made with {', '.join(changed)}; {hint}")


def write_line(f, record):
    """One record, flushed at once: a crash loses at most the line being written."""
    f.write(json.dumps(record) + "\n")
    f.flush()


@contextlib.contextmanager
def atomic(path, mode="w"):
    """A file to write path through: a temporary file beside it, renamed over path once complete."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", mode, encoding=None if "b" in mode else "utf-8") as f:
        yield f
    os.replace(path + ".tmp", path)


def write_atomic(path, text):
    with atomic(path) as f:
        f.write(text)


def write_jsonl(path, records):
    with atomic(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
