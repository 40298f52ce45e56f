"""cli.py: what every stage's command line shares.

Flag types that check their range, so that a bad value exits 2 with argparse's one line naming the
flag ("argument --epochs: must be at least 1, got 0"), before any model or data is loaded. And
main(), which runs a stage so that a missing or unreadable file is one line on stderr, not a
traceback. Errors the stages detect themselves are a SystemExit with one line, which Python prints
as such.
"""
import argparse
import math
import sys


def _parse(text, kind):
    try:
        x = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return x


def at_least(lo, kind=int):
    """A number >= lo."""
    def check(text):
        x = _parse(text, kind)
        if x < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {text}")
        return x
    return check


def between(lo, hi, kind=float):
    """A number in [lo, hi]."""
    def check(text):
        x = _parse(text, kind)
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {text}")
        return x
    return check


def above(lo, kind=float):
    """A number > lo (a learning rate, a size in GiB)."""
    def check(text):
        x = _parse(text, kind)
        if not x > lo:
            raise argparse.ArgumentTypeError(f"must be more than {lo}, got {text}")
        return x
    return check


def budget(text):
    """A thinking budget: 'auto' (no cap; the answer's room is what the context leaves) or tokens >= 1."""
    return text if text == "auto" else at_least(1)(text)


def main(run):
    """Run a stage's main(); a file the user named that is missing, a directory, unreadable or not
    text becomes one line on stderr and exit code 1; Ctrl-C, exit code 130 without a traceback
    (every output is appended a line at a time or renamed into place, so a rerun resumes)."""
    try:
        return run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.filename is not None:
            sys.exit(f"{e.filename}: {e.strerror}")
        if isinstance(e, FileNotFoundError):  # hf_checkpoint's and chat's, whose message names the path
            sys.exit(str(e))
        raise
    except UnicodeDecodeError as e:
        sys.exit(f"an input file is not UTF-8 text ({e})")
