"""sample.py: s1's budget forcing (paper §3.1), on a small inference engine of our own (engine.py).

    # one question, printed with its thinking and answer
    python sample.py --model simplescaling/s1.1-32B --prompt "How many r in raspberry?" \\
        --max-thinking-tokens 2000
    # resumable
    python sample.py --model DIR --input questions.jsonl --output samples.jsonl --num-ignore 2
    # every GPU: 8 processes as replicas of --tp GPUs each (default: the smallest that fits)
    torchrun --nproc-per-node 8 sample.py --model simplescaling/s1.1-32B --input ... [--tp 2]
    # memory plan, before renting
    python sample.py --dry-run --model Qwen/Qwen2.5-32B-Instruct --gpus 8
    # OpenAI-compatible /v1/chat/completions on this engine
    python serve.py --model DIR --port 8000

main() is the command line's path: questions in, samples out. Budget forcing itself is Row, whole,
a small state machine per row of generation:
  - The prompt ends in "<|im_start|>think"; every token after it is a thinking token until the
    model emits the end-of-thinking delimiter <|im_start|> (or <|im_end|>, or <|endoftext|>).
  - Cap: once a row has its budget of thinking tokens, force "<|im_start|>answer\\nFinal Answer:",
    after a "\\n" unless the thinking already ends in one (as s1's harness does).
  - Extend: when the row emits the delimiter with ignores left, drop it and force "Wait" instead
    (or nothing, with an empty ignore string); the first token of every thinking round may not be
    the delimiter (the harness's min_tokens=1); the forced "Wait" counts as thinking and the
    dropped delimiter does not, as in the harness's final cut, but the budget is spent as the
    rounds run (the harness lets every round run to the full budget and cuts the total after).
  - A natural stop keeps the model's <|im_start|> and forces "answer"; the answer runs to
    <|im_end|>.
Row.feed is the paper's method; the details by which s1's harness decides tokens beyond it are
helpers marked "s1 harness fidelity". Then make_rows (a question's rows: its samples times its
settings), generate (questions in, one result per question, sample and setting out), rejection
sampling (the paper's baseline), loading a model for generation (eval.py, serve.py, prepare.py
and curate.py generate through this file), and the command line. engine.py runs the rows: it
draws, and asks each row what to feed.
"""
import argparse
import json
import os
import re
import sys
import weakref
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field, fields

import torch

from machinery import chat, cli, engine, jsonl, parallel, plan
from machinery import hf_checkpoint as hf

# ----------------------------------------------------------------------------------------------
# The recipe: s1's numbers (its eval/commands.sh, and its harness's vllm_causallms.py)

MODEL = "simplescaling/s1.1-32B"  # the released s1.1 model (eval/commands.sh)
MAX_TOKENS = 32768   # the context, prompt + thinking + answer: max_gen_toks=32768 in every s1 run
IGNORE_STR = "Wait"  # what replaces the end of thinking (paper §3.1; thinking_n_ignore_str=Wait)
TEMPERATURE = 0.0    # greedy, as s1 evaluated
ANSWER_ROOM = 100    # "auto" budgets leave 100 tokens for the answer (vllm_causallms.py l. 263-264)
# Rejection sampling's most tries per sample. The harness has no limit; Figure 6's smallest budget
# (3,500 tokens on AIME24) took 655 tries per sample on average, so 1,000 lets most samples end as
# s1's did, and bounds the few that never would.
MAX_TRIES = 1000
# Suffixes of the paper's conditional-control baselines (paper §5.4, Table 3), appended to the
# question.
CONTROL = {
    "tokens": "\n\nThink for up to {} tokens.",
    "steps": "\n\nThink for up to {} steps.",
    "long": "\n\nAnswer after a long amount of thinking. If you feel like you are finished early, "
            "spend the extra time trying to double-check your work until you are absolutely sure "
            "that you have the correct answer.",
    "short": "\n\nAnswer after a short amount of thinking. Do not spend excessive time "
             "double-checking your work.",
}

# ----------------------------------------------------------------------------------------------
# The command line's path: questions in, samples out

# What shapes the samples in an --output: a rerun into it must use the same (its .config.json),
# with every field of its Setting.
CONFIG_KEYS = ("model", "tokenizer", "dtype", "max_tokens", "temperature", "top_p", "seed", "n")


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        plan.print_generation_plan(args.model, args.gpus, args.max_tokens, args.batch_size,
                                   args.gpu_memory_gib, args.tp)
        return
    # bad input is named before any weight is loaded
    records = [{"question": args.prompt}] if args.prompt else numbered_questions(args.input)
    if args.input:
        # An --output is resumed; records made with another config must not be mixed into it.
        args.dtype = resolve_dtype(args.dtype, args.device)
        config = {**{k: getattr(args, k) for k in CONFIG_KEYS}, **asdict(args.setting)}
        config_path = re.sub(r"\.jsonl$", "", args.output) + ".config.json"
        # which weights made the records: another model at this path (retrained) is refused
        old = jsonl.read_json(config_path).get("weights_fingerprint")
        fingerprint = hf.fingerprint_for_resume(args.model, old)
        config["weights"] = fingerprint and fingerprint["sha256"]
        hint = f"use another --output than {args.output}, or delete it"
        jsonl.same_config(config_path, config, hint, defaults=SETTING_DEFAULTS,
                          upgrade=stored_setting,
                          ignore=() if int(os.environ.get("RANK", 0)) == 0 else ("weights",))
    model, tokenizer, world, rank = load_for_generation(
        args.model, args.device, args.dtype, args.max_tokens, args.batch_size, args.tokenizer,
        args.dist_timeout_min, args.tp)
    try:  # a prompt that leaves no room to generate is named before anything runs
        encode_prompts(tokenizer, [r["question"] for r in records], args.max_tokens, args.setting)
    except ValueError as e:
        raise SystemExit(f"{args.input or '--prompt'}: {e}; raise --max-tokens") from None
    run = lambda qs, on_result=None: generate(
        model, tokenizer, qs, [args.setting], n=args.n, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        batch_size=args.batch_size, progress=rank == 0, kv_memory_gb=args.kv_memory_gb,
        on_result=on_result)

    if args.prompt:
        for out in run([args.prompt]):
            if rank == 0:
                print(f"--- thinking ({out['thinking_tokens']} tokens, ended {out['ended']}; "
                      f"forced: {[e['what'] for e in out['forced']]})\n{out['thinking']}")
                print(f"--- answer ({out['answer_tokens']} tokens)\n{out['answer']}")
        return
    if rank == 0:
        jsonl.write_atomic(config_path, json.dumps(dict(config, weights_fingerprint=fingerprint),
                                                   indent=1) + "\n")
        parallel.recover_parts(args.output)  # the rows of a stopped data-parallel run
    # every rank skips the ids already in the output (jsonl.resume cuts a torn last line)
    done = parallel.broadcast({r["id"] for r in jsonl.resume(args.output)} if rank == 0 else None)
    todo = [r for r in records if r["id"] not in done]
    print(f"{len(records)} questions, {len(done)} already in {args.output}, {len(todo)} to go",
          file=sys.stderr)
    todo = parallel.deal(todo)  # this replica's share (parallel.py: data x tensor parallel)
    per = args.n
    waiting = {}  # a question's samples are written together, as soon as the last one finishes
    with parallel.open_output(args.output) as f:
        def write(index, out):
            q, i = divmod(index, per)
            waiting.setdefault(q, {})[i] = out
            if len(waiting[q]) == per:
                f.writelines(json.dumps(dict(todo[q], sample=i, **o)) + "\n"
                             for i, o in sorted(waiting.pop(q).items()))
                f.flush()
        run([r["question"] for r in todo], write)
    position = {r["id"]: n for n, r in enumerate(records)}  # the replicas' rows, in input order
    parallel.merge_parts(args.output, lambda r: (position[r["id"]], r["sample"]))


# ----------------------------------------------------------------------------------------------
# 1. A setting: one way to run a question

@dataclass(frozen=True)
class Setting:
    """Everything that shapes how one question is run: budget forcing (paper §3.1) and the paper's
    baselines (§5.4, Table 3). Its field names are the command-line flags, serve.py's request
    fields and eval.py's NAME=VALUE setting parts. Adding a variant is a field here (its default:
    off), its check below, its rule in Row, and a test (docs/sampling.md, "Adding a setting")."""
    max_thinking_tokens: object = None  # thinking cap: None (no cap), "auto" or an integer
    num_ignore: int = 0           # times the end of thinking is replaced by ignore_str (§3.1)
    ignore_str: str = IGNORE_STR  # "" suppresses the end of thinking and appends nothing
    # the end of thinking may not be drawn before this many thinking tokens (the harness's
    # min_tokens_thinking, vllm_causallms.py l. 273-280)
    min_thinking_tokens: int = 0
    control: str | None = None    # a conditional-control prompt: tokens, steps, long, short (§5.4)
    control_value: int | None = None  # N of "Think for up to N tokens/steps."
    # step-conditional control + budget forcing: the thinking ends at "<|im_start|>0" (s1's
    # until_thinking=<|im_start|>0, eval/commands.sh l. 70-74) instead of where the model ends it
    step_forcing: bool = False
    tries: int = 0                # rejection sampling (§5.4): samples until the thinking ends
    #                               within max_thinking_tokens, at most this many
    own_temperature: float | None = None  # this setting's temperature (None: the run's)
    think: bool = True            # False: s1's "nottc", a plain chat completion without thinking

    def __post_init__(self):
        cap, bad = self.max_thinking_tokens, None
        if not (cap is None or cap == "auto" or is_count(cap) and cap >= 1):
            bad = "max_thinking_tokens", "a positive integer, \"auto\" or null"
        for name in ("num_ignore", "min_thinking_tokens", "tries"):
            if not (is_count(getattr(self, name)) and getattr(self, name) >= 0):
                bad = bad or (name, "an integer >= 0")
        if not isinstance(self.ignore_str, str):
            bad = bad or ("ignore_str", "a string")
        if self.control is not None and not (isinstance(self.control, str)
                                             and self.control in CONTROL):
            bad = bad or ("control", f"one of {', '.join(sorted(CONTROL))}")
        for name in ("step_forcing", "think"):
            if not isinstance(getattr(self, name), bool):
                bad = bad or (name, "true or false")
        if self.control_value is not None and self.control not in ("tokens", "steps"):
            bad = bad or ("control_value", "used with control tokens or steps only")
        if self.control in ("tokens", "steps") and not (
                is_count(self.control_value) and self.control_value >= 1):
            bad = bad or ("control_value", f"a positive integer (control {self.control})")
        if self.step_forcing and self.control != "steps":
            bad = bad or ("step_forcing", "used with control steps only")
        if self.control == "steps" and (self.num_ignore or self.min_thinking_tokens):
            # step rows see the end of thinking one token late (Row.step_header): nothing to ban
            bad = bad or ("control", "steps with num_ignore or min_thinking_tokens (undefined)")
        if self.tries and not is_count(cap):
            bad = bad or ("tries", "rejection sampling with an integer max_thinking_tokens")
        if self.tries and (self.step_forcing or not self.think):
            # accepted means: the thinking ended by itself within the budget
            bad = bad or ("tries", "rejection sampling of a thinking that ends by itself")
        own = self.own_temperature
        if own is not None and not (isinstance(own, (int, float)) and not isinstance(own, bool)
                                    and own >= 0):
            bad = bad or ("own_temperature", "a number >= 0")
        if bad:
            value = getattr(self, bad[0])
            raise ValueError(f"invalid '{bad[0]}': {value!r} ({bad[1]})")

    def prompt_text(self, question, system=chat.SYSTEM):
        """The prompt: the question, its control suffix, and the opening of the thinking: s1's
        "<|im_start|>think", or "<|im_start|>" for the step format (thinking_start=<|im_start|>),
        or nothing for a plain completion."""
        question = control_prompt(question, self.control, self.control_value)
        opening = "" if not self.think else chat.IM_START if self.steps else chat.THINK
        return chat.prompt_text(question, system) + opening

    @property
    def steps(self):
        """The step format of s1's step-conditional model: "<|im_start|>N steps left" lines."""
        return self.control == "steps"


SETTING_DEFAULTS = {f.name: f.default for f in fields(Setting)}


def is_count(value):
    """An integer that is not a bool (True is an int in Python, and in JSON it is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def control_prompt(question, kind=None, value=None):
    """The question with a conditional-control suffix (CONTROL), if any."""
    return question if kind is None else question + CONTROL[kind].format(value)


def setting_fields(text):
    """{NAME: VALUE} from "NAME=VALUE" (eval.py's settings, sample.py --setting): VALUE is read as
    JSON (500, null, true), else kept as a string (Hmm, auto)."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise ValueError(f"{text!r}: expected NAME=VALUE")
    try:
        return {name.strip(): json.loads(value)}
    except ValueError:
        return {name.strip(): value}


def setting_from(values):
    """A Setting from a dict of its fields (a request, the flags); ValueError names the field."""
    names = {f.name for f in fields(Setting)}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(f"unknown setting field {unknown[0]!r} "
                         f"(fields: {', '.join(sorted(names))})")
    return Setting(**values)


# ----------------------------------------------------------------------------------------------
# 2. Budget forcing: one row of generation

@dataclass(eq=False)
class Row:
    """One generation: a question under one budget-forcing setting, one sample of it. Its methods
    are budget forcing, whole: its budget (thinking_cap), what it may not draw (banned) and the
    token it feeds next (next_token, through feed)."""
    prompt_len: int
    max_len: int                # prompt + generated tokens at most (the context)
    special: dict               # special_ids(): the delimiters and forced texts, as token ids
    budget: object = None       # most thinking tokens: None (no cap), "auto" or an integer
    ignores_left: int = 0       # end-of-thinking delimiters still to replace by "Wait"
    min_thinking: int = 0       # thinking tokens before the end of thinking may be drawn
    steps: bool = False         # the step format: "<|im_start|>N steps left" lines (step_rule)
    step_forcing: bool = False  # ... whose thinking ends at "<|im_start|>0"
    phase: str = "think"        # think -> answer -> done; a plain completion starts at "answer"
    temperature: float = 0.0    # 0: greedy
    top_p: float = 1.0
    seed: int = 0               # its random draw at position t depends on (seed, t) only
    index: int = 0              # where its result goes
    setting: object = None      # the Setting it runs (generate reads its tries and think)
    attempt: int = 0            # rejection sampling: the number of this try, from 0
    cap: int | None = field(init=False, default=None)     # the budget in tokens
    round_start: bool = field(init=False, default=False)  # the next draw opens a thinking round
    step_header: bool = field(init=False, default=False)  # the last token fed is an <|im_start|>
    header_pending: int = field(init=False, default=0)    # ... not yet counted as thinking
    forced: deque = field(default_factory=deque)  # tokens to feed before sampling again
    tokens: list = field(default_factory=list)    # everything fed after the prompt
    thinking_tokens: int = 0
    answer_start: int | None = None  # where in tokens the answer text begins, after its header
    # how thinking ended: natural | capped | length (none: a plain completion)
    ended: str = ""
    events: list = field(default_factory=list)    # what budget forcing did, and when
    finished: bool = False      # the answer was closed by <|im_end|>

    def __post_init__(self):
        self.cap = self.thinking_cap()
        if self.phase == "think" and self.ignores_left > 0:
            self.open_round()  # (a): the first round too
        # the step format's prompt ends in <|im_start|>: the model writes the first header
        self.step_header = self.steps and self.phase == "think"

    def thinking_cap(self):
        """The budget in tokens. "auto" is the harness's: context - prompt - the forced header
        "<|im_start|>answer\\nFinal Answer:" - 100 tokens for the answer (vllm_causallms.py
        l. 262-264; the prompt here already ends in <|im_start|>think). Per row: the harness
        subtracts the longest prompt of the batch."""
        if self.budget == "auto":
            room = self.max_len - self.prompt_len - len(self.special["final_answer"])
            return max(1, room - ANSWER_ROOM)
        return None if self.budget is None else int(self.budget)

    def next_token(self, draw):
        """The token this row feeds next, appended to its tokens: a forced one while any is queued,
        else the model's draw(banned ids), budget-forced. None when the context is full (the row is
        done without feeding)."""
        if self.prompt_len + len(self.tokens) >= self.max_len:
            self.ended, self.phase = self.ended or "length", "done"
            return None
        if self.forced:
            token = self.feed(self.forced.popleft(), sampled=False)
        else:
            token = self.feed(draw(self.banned()), sampled=True)
            if token is None:  # the delimiter was dropped with nothing in its place (d)
                token = self.redraw(draw)
        self.tokens.append(token)
        return token

    def feed(self, token, sampled):
        """Given the next token (sampled by the model, or popped from the forced queue), return the
        token to feed, updating the phase, counts and forced queue. None means the delimiter was
        dropped with nothing to say instead: draw again, without the delimiter (redraw)."""
        ids = self.special
        if self.phase != "think":
            return self.feed_answer(token, sampled)
        self.leave_round_start(sampled)  # (a)
        if self.steps and sampled and (token == ids["im_start"] or self.step_header):
            return self.step_rule(token)
        if sampled and token in ids["stops"]:  # the model ends its thinking
            if self.ignores_left > 0:  # suppress the delimiter, think on: "Wait"
                self.ignores_left -= 1
                self.events.append({"at": self.thinking_tokens, "what": ids["ignore_str"]})
                self.forced.extend(self.kept_stop(token) + ids["ignore"])  # (b)
                self.open_round()  # (a)
                if not self.forced:  # (d)
                    return None
                token = self.forced.popleft()
            else:  # natural end: keep <|im_start|> (even for an <|im_end|>), force "answer"
                self.phase, self.ended = "answer", "natural"
                self.forced.extend(self.kept_stop(token) + [ids["im_start"]] + ids["answer"])  # (b)
                return self.forced.popleft()
        return self.count_thinking(token)

    def count_thinking(self, token):
        """A thinking token fed: counted, and the cap forced once the budget is spent."""
        ids = self.special
        self.thinking_tokens += 1
        if self.cap is not None and self.thinking_tokens >= self.cap:  # out of budget: answer now
            self.phase, self.ended = "answer", "capped"
            newline = self.newline_before_answer(token)  # (c)
            self.forced = deque(newline + ids["final_answer"])
            self.events.append({"at": self.thinking_tokens,
                                "what": "\n" * bool(newline) + chat.FINAL_ANSWER})
        return token

    def step_rule(self, token):
        """Step-conditional control (paper §5.4): s1's step model writes "<|im_start|>N steps left"
        before each step, so an <|im_start|> ends the thinking only when the token after it says
        so: "0" under step forcing (s1's until_thinking=<|im_start|>0), or anything but a digit
        (the model's own "<|im_start|>answer"). A header's <|im_start|> counts as thinking once
        its digit follows. Returns the token to feed (None: go on as any thinking token)."""
        ids = self.special
        if token == ids["im_start"] and not self.step_header:
            if self.cap is not None and self.thinking_tokens + 1 >= self.cap:
                return self.count_thinking(token)  # the budget's last token: the cap answers next
            self.step_header, self.header_pending = True, 1
            return token
        self.step_header = False
        if token in ids["digits"] and not (self.step_forcing and token == ids["zero"]):
            self.thinking_tokens += self.header_pending  # a step header: thinking goes on
            self.header_pending = 0
            return self.count_thinking(token)
        self.phase, self.ended = "answer", "steps" if token == ids["zero"] else "natural"
        if token == ids["zero"]:
            self.events.append({"at": self.thinking_tokens, "what": "0 steps left: answer"})
        self.forced.extend(ids["answer"])  # in place of the drawn token
        return self.forced.popleft()

    def feed_answer(self, token, sampled):
        """The answer phase: the model writes until it closes the answer."""
        if self.answer_start is None and sampled:  # the model's first token after the header
            self.answer_start = len(self.tokens)
        if sampled and (token == self.special["im_end"] or token in self.special["eos"]):
            self.phase, self.finished = "done", True
        return token

    # -- s1 harness fidelity: how s1's harness (lm-evaluation-harness's vllm_causallms.py) decides
    # tokens where the paper says nothing. Each changes what a row generates; tests/test_sample.py
    # pins each against the cited lines.

    # s1 harness fidelity (a): the first token of a thinking round may not end it. When it ignores
    # the end of thinking, the harness runs every thinking round with min_tokens=1
    # (vllm_causallms.py l. 273-280), the first round included; a round starts after
    # "<|im_start|>think" and after each "Wait".
    def open_round(self):
        self.round_start = True

    def leave_round_start(self, sampled):
        """A sampled thinking token is past its round's first token: the ban is lifted."""
        self.round_start = self.round_start and not sampled

    def banned(self):
        """Ids the model may not draw next: the end of thinking, on a round's first token (a) and
        before the setting's minimum of thinking tokens."""
        early = self.round_start or self.thinking_tokens < self.min_thinking
        return self.special["stops"] if early and self.phase == "think" else ()

    # s1 harness fidelity (b): an <|endoftext|> that ends the thinking stays in the context. vLLM
    # returns a stop id among the tokens and the harness strips only <|im_start|> and <|im_end|>
    # (vllm_causallms.py l. 362, 397).
    def kept_stop(self, token):
        """What stays of the delimiter that ended the thinking: an <|endoftext|>, else nothing."""
        return [token] if token in self.special["eos"] else []

    # s1 harness fidelity (c): at the cap, "<|im_start|>answer\nFinal Answer:" follows a "\n" only
    # when the thinking does not already end in one (vllm_causallms.py l. 404-409).
    def newline_before_answer(self, last):
        """[] when the last thinking token ends in a newline, else the newline's ids."""
        return [] if last in self.special["ends_in_newline"] else self.special["newline"]

    # s1 harness fidelity (d): with ignore_str "" (s1's "no string" ablation) the dropped delimiter
    # has nothing in its place, and the harness's next round goes on from the same context
    # (vllm_causallms.py l. 362-367, 376): draw again, now with the delimiter banned (a).
    def redraw(self, draw):
        return self.feed(draw(self.banned()), sampled=True)


_newline_cache = weakref.WeakKeyDictionary()  # per tokenizer object: two tokenizers never share one


def tokens_ending_in_newline(tokenizer):
    """Ids whose text ends in "\\n" (2,178 of Qwen2.5's 151,665, e.g. ".\\n\\n"): where the thinking
    already ends in a newline, the cap adds none. Decoding the vocabulary takes 1-3 s, so once."""
    if tokenizer not in _newline_cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _newline_cache[tokenizer] = frozenset(i for i, t in enumerate(texts) if t.endswith("\n"))
    return _newline_cache[tokenizer]


def special_ids(tokenizer, ignore_str):
    """The budget-forcing strings as token ids. ignore_str "" is s1's "no string" ablation: the
    delimiter is suppressed and nothing is appended."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    # An added token, special or not: s1's train/sft.py made <|fim_pad|> the pad token, so a saved
    # s1 tokenizer no longer lists <|endoftext|> among its special tokens. A byte tokenizer may
    # lack it.
    added = tokenizer.get_added_vocab()
    eos = [added[chat.EOS]] if chat.EOS in added else []
    im_start, im_end = enc(chat.IM_START)[0], enc(chat.IM_END)[0]
    return dict(im_start=im_start, im_end=im_end, eos=eos, stops={im_start, im_end, *eos},
                answer=enc("answer"), think=enc("think"), final_answer=enc(chat.FINAL_ANSWER),
                newline=enc("\n"), ends_in_newline=tokens_ending_in_newline(tokenizer),
                ignore=enc(ignore_str), ignore_str=ignore_str, zero=enc("0")[0],
                digits={t[0] for t in map(enc, "0123456789") if len(t) == 1})


def row_seed(seed, question, sample):
    """The seed of a row's draws: the same for every setting of one sample of one question, so
    that rows sharing a prefix draw alike, and independent of batches, order and resumption."""
    return zlib.crc32(f"{seed}/{sample}/{question}".encode())


def make_rows(tokenizer, question, prompt_len, max_len, settings, samples=(0,), first_index=0,
              temperature=TEMPERATURE, top_p=1.0, seed=0, attempt=0):
    """The rows of one question: each of `samples` (labels of its random draws) under each Setting,
    indexed from first_index in that order. prompt_len: one length, or one per setting (their
    prompts differ with a control prompt). attempt: a rejection-sampling retry's number, which
    gives it draws of its own. generate and serve.py build their rows here."""
    settings = [s if isinstance(s, Setting) else setting_from(s) for s in settings]
    special, rows = {}, []
    lens = prompt_len if isinstance(prompt_len, (list, tuple)) else [prompt_len] * len(settings)
    for i, sample in enumerate(samples):
        for j, s in enumerate(settings):
            string = s.ignore_str
            special[string] = special.get(string) or special_ids(tokenizer, string)
            # the harness generates B + 1 tokens and accepts at most B, counting the delimiter it
            # stopped on (vllm_causallms.py l. 299)
            cap = s.max_thinking_tokens + 1 if s.tries else s.max_thinking_tokens
            label = sample if not s.tries else "/".join(
                [str(sample)] * (sample != 0) + [f"try{attempt}"])
            rows.append(Row(lens[j], max_len, special[string], budget=cap,
                            ignores_left=s.num_ignore if s.think else 0,
                            min_thinking=s.min_thinking_tokens, steps=s.steps,
                            step_forcing=s.step_forcing, phase="think" if s.think else "answer",
                            temperature=(temperature if s.own_temperature is None
                                         else s.own_temperature),
                            top_p=top_p, seed=row_seed(seed, question, label),
                            index=first_index + i * len(settings) + j, setting=s,
                            attempt=attempt))
    return rows


# ----------------------------------------------------------------------------------------------
# 3. generate: questions in, results out

def prompt_ids(tokenizer, text, max_tokens, cache=None):
    """The prompt's token ids; ValueError when it leaves no room to generate."""
    if cache is not None and text in cache:
        return cache[text]
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) >= max_tokens:
        raise ValueError(f"the prompt has {len(ids)} tokens, the context (max_tokens) "
                         f"{max_tokens}: no room to generate")
    if cache is not None:
        cache[text] = ids
    return ids


def encode_prompts(tokenizer, questions, max_tokens, setting=None):
    """Every question's prompt under one setting (default: s1's), checked to leave room."""
    setting = setting or Setting()
    texts = [setting.prompt_text(q) for q in questions]
    prompts = []
    for i, t in enumerate(texts):
        try:
            prompts.append(prompt_ids(tokenizer, t, max_tokens))
        except ValueError as e:
            raise ValueError(f"question {i}: {e}") from None
    return texts, prompts


def answer_span(row):
    """Token range of the answer text: from the first token the model wrote after the answer
    header, without the closing <|im_end|>. (The thinking is tokens[:row.thinking_tokens].)"""
    start = len(row.tokens) if row.answer_start is None else row.answer_start
    return start, len(row.tokens) - row.finished


def own_thinking(row):
    """A plain completion's thinking as s1's eval/compute_sample_stats.py counts it: s1 models write
    "<|im_start|>think ... <|im_start|>answer" unprompted. Its token range, and where the answer
    text starts; (0, 0, 0) when the model wrote no answer header."""
    toks, ids = row.tokens, row.special
    header, opener = [ids["im_start"]] + ids["answer"], [ids["im_start"]] + ids["think"]
    end = next((i for i in range(len(toks)) if toks[i:i + len(header)] == header), None)
    if end is None:
        return 0, 0, 0
    start = len(opener) if toks[:len(opener)] == opener else 0
    return start, end, end + len(header)


def result(row, tokenizer, prompt, plain=False):
    """What a caller keeps of a finished row. plain: a completion without budget forcing
    (think=False)."""
    if plain:
        think_start, think_end, start = own_thinking(row)
        end = len(row.tokens) - row.finished
    else:
        think_start, think_end = 0, row.thinking_tokens
        start, end = answer_span(row)
    decode_ = lambda toks: tokenizer.decode(toks, skip_special_tokens=False)
    return {"prompt": prompt, "text": decode_(row.tokens),
            "thinking": decode_(row.tokens[think_start:think_end]),
            "answer": decode_(row.tokens[start:end]), "thinking_tokens": think_end - think_start,
            "answer_tokens": end - start, "generated_tokens": len(row.tokens),
            "ended": row.ended or "none", "forced": row.events, "finished": row.finished}


def generate(model, tokenizer, questions, settings=None, n=1, max_thinking_tokens=None,
             num_ignore=0, ignore_str=IGNORE_STR, think=True, max_tokens=MAX_TOKENS,
             temperature=TEMPERATURE, top_p=1.0, seed=0, batch_size=64, progress=True,
             stats=None, on_token=None, share=True, on_result=None, kv_memory_gb=None,
             block_size=None):
    """Generate for each question (the chat template is applied here) under each Setting (a
    budget-forcing sweep, or the paper's baselines side by side); without settings, the one
    setting of max_thinking_tokens, num_ignore, ignore_str and think. Returns one dict per
    (question, sample, setting), in that order: n > 1 is parallel sampling (majority voting). With
    share (the default) the rows of a question with one prompt are one sequence until they differ;
    share=False runs each alone (the same tokens, more work). A rejection-sampling setting (tries)
    samples again until its thinking ends within its budget; its result records its tries and
    whether it was accepted (after the last try the last sample is kept, not accepted; the harness
    loops forever). batch_size: most sequences decoded together. on_result(index, result) is
    called as each result is final, on_token(row) after each token; stats, if a dict, gets the
    engine's counts (tokens fed, ...)."""
    from tqdm import tqdm
    settings = [s if isinstance(s, Setting) else setting_from(s) for s in settings or [
        Setting(max_thinking_tokens, num_ignore, ignore_str, think=think)]]
    runner = engine.Engine(model, max_tokens, batch_size, len(tokenizer), kv_memory_gb, block_size,
                           on_token)
    cache = {}  # prompt text -> ids
    texts = [[s.prompt_text(q) for s in settings] for q in questions]
    for q, row_texts in enumerate(texts):
        for text in row_texts:
            try:
                prompt_ids(tokenizer, text, max_tokens, cache)
            except ValueError as e:
                raise ValueError(f"question {q}: {e}") from None
    per_question = n * len(settings)

    def add(q, rows):
        """Rows of one question: those with one prompt share it (and fork where they differ)."""
        by_prompt = {}
        for row in rows:
            by_prompt.setdefault(texts[q][row.index % len(settings)], []).append(row)
        for text, group in by_prompt.items():
            for part in [group] if share else [[r] for r in group]:
                runner.add(cache[text], part)

    def rows_of(q, samples, chosen, attempt=0, first_index=None):
        lens = [len(cache[texts[q][settings.index(s)]]) for s in chosen]
        return make_rows(tokenizer, questions[q], lens, max_tokens, chosen, samples=samples,
                         first_index=q * per_question if first_index is None else first_index,
                         temperature=temperature, top_p=top_p, seed=seed, attempt=attempt)

    for q in range(len(questions)):
        add(q, rows_of(q, range(n), settings))
    results = [None] * (len(questions) * per_question)
    bar = tqdm(total=len(results), desc="generate", disable=not progress, leave=False)
    while runner.busy():
        for row in runner.step():
            q, (i, j) = row.index // per_question, divmod(row.index % per_question, len(settings))
            s = row.setting
            out = result(row, tokenizer, texts[q][j], plain=not s.think)
            if s.tries:
                # the harness accepts a thinking that stopped by itself within the budget (l. 299)
                within = out["thinking_tokens"] + 1 <= s.max_thinking_tokens
                out.update(tries=row.attempt + 1, accepted=out["ended"] == "natural" and within)
                if not out["accepted"] and row.attempt + 1 < s.tries:
                    add(q, rows_of(q, [i], [s], row.attempt + 1, row.index))
                    continue
            results[row.index] = out
            on_result and on_result(row.index, out)
            bar.update()
    bar.close()
    if stats is not None:
        for k in ("fed", "steps", "preempted", "forks"):
            stats[k] = stats.get(k, 0) + getattr(runner, k)
    return results


def rejection_sample(model, tokenizer, questions, max_thinking_tokens, max_tries=MAX_TRIES,
                     temperature=1.0, num_ignore=0, ignore_str=IGNORE_STR, **kw):
    """The paper's rejection-sampling baseline (§5.4) on its own: generate with one Setting whose
    tries are max_tries. A retry prefills its prompt again: at the paper's smallest budget (3,500
    tokens on AIME24) that is 3.5 % of a retry's tokens (python -m tools.bench retry)."""
    setting = Setting(max_thinking_tokens, num_ignore, ignore_str, tries=max_tries)
    return generate(model, tokenizer, questions, settings=[setting], temperature=temperature, **kw)


# ----------------------------------------------------------------------------------------------
# 4. A model for generation: this rank's tensor-parallel slice under torchrun

def resolve_dtype(dtype, device):
    """The dtype's name, "auto" resolved: bfloat16 on a GPU, float32 on a CPU. device: "auto",
    "cuda", "cpu" or a torch.device. The CLIs store the resolved name beside their outputs, so that
    a rerun on another device cannot mix precisions."""
    if dtype != "auto":
        return dtype
    # cli.device: the GPU preflight, before anything is written
    kind = getattr(device, "type", None) or cli.device(device).type
    return "bfloat16" if kind == "cuda" else "float32"


def load_model(name, device, dtype, tp=1, tp_rank=0, tp_group=None):
    """The model, or under tensor parallelism (tp > 1) this rank's slice of it, all-reducing over
    tp_group: every rank fetches the checkpoint (once per node) and reads only its slice of each
    weight."""
    # resolved (and fetched, once per node) before any weight is read
    path = hf.checkpoint_dir(name)
    if tp == 1:
        return hf.from_pretrained(path, device=device, dtype=dtype).eval()
    kv_heads = hf.read_config(f"{path}/config.json").num_key_value_heads
    if kv_heads % tp:
        raise SystemExit(f"--tp {tp} does not divide the {kv_heads} KV heads of --model {name}")
    model = hf.from_pretrained(path, device=device, dtype=dtype,
                               select=parallel.tensor_parallel_slice(tp_rank, tp))
    return parallel.split_heads(model, tp, tp_group).eval()


def load_for_generation(name, device="auto", dtype="auto", max_tokens=MAX_TOKENS, rows=64,
                        tokenizer=None, timeout_min=60, tp=None):
    """(model, tokenizer, world, rank) for every script that generates: under torchrun, world = tp
    x dp, and this rank holds its tensor-parallel slice of its replica's model (parallel.layout
    says which; parallel.deal, open_output and merge_parts share the questions out and the rows
    back). tp: --tp; None: on GPUs the smallest degree whose memory plan fits (checked before any
    weight is loaded), on a CPU 1 (no GPU memory to plan). dtype "auto": bf16 on a GPU, fp32 on a
    CPU. timeout_min: --dist-timeout-min (parallel.init_distributed)."""
    device, world, rank = parallel.init_distributed(device, timeout_min)
    dtype = getattr(torch, resolve_dtype(dtype, device))
    if device.type == "cuda":
        gpu_gib = torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
        tp = tp or plan.smallest_fitting_tp(name, world, max_tokens, rows, gpu_gib,
                                            dtype.itemsize)
        plan.check_fits(name, tp, max_tokens, rows, gpu_gib, dtype.itemsize)
    tp_group = parallel.set_layout(parallel.broadcast(tp or 1), timeout_min)  # rank 0's choice
    layout = parallel.layout
    model = load_model(name, device, dtype, layout.tp, layout.tp_rank, tp_group)
    return model, chat.load_tokenizer(tokenizer or model.source_dir), world, rank


# ----------------------------------------------------------------------------------------------
# 5. Helpers of the command line

def stored_setting(old):
    """A saved config in today's form: the --rejection-sampling and --max-tries of an --output made
    before Setting existed are its tries. (A field added to Setting since a config was saved reads
    as its default: SETTING_DEFAULTS, given to jsonl.same_config.)"""
    old = dict(old)
    max_tries = old.pop("max_tries", None)
    if old.pop("rejection_sampling", False):
        old["tries"] = max_tries
    return old


def numbered_questions(path):
    """The --input records, each with an id: its own, else its line number from 0."""
    records = []
    for n, record in jsonl.numbered(path):
        if not isinstance(record.get("question"), str):
            raise SystemExit(f"{path} line {n}: needs a string 'question'")
        records.append(dict(record, id=record.get("id", n - 1)))
    if not records:
        raise SystemExit(f"{path}: no questions (the file is empty or blank)")
    return records


# ----------------------------------------------------------------------------------------------
# 6. Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="hub name or local checkpoint directory")
    p.add_argument("--tokenizer", default=None, help="default: the model's")
    p.add_argument("--prompt", help="one question, printed with its thinking and answer")
    p.add_argument("--input", help="JSONL with a 'question' (and optionally 'id') per line")
    p.add_argument("--output", help="JSONL of samples; records already in it are skipped (resume)")
    p.add_argument("--max-thinking-tokens", type=cli.budget, default=None,
                   help="cap on thinking tokens: an integer or 'auto'")
    p.add_argument("--num-ignore", type=cli.at_least(0), default=0,
                   help="times to replace the end of thinking by --ignore-str")
    p.add_argument("--ignore-str", default=IGNORE_STR,
                   help='s1 ablated "Hmm", "Alternatively" and "" (suppress the end of thinking, '
                        'append nothing)')
    p.add_argument("--max-tokens", type=cli.at_least(2), default=MAX_TOKENS,
                   help="context: prompt + thinking + answer")
    p.add_argument("--temperature", type=cli.at_least(0, float), default=TEMPERATURE,
                   help="0 = greedy (s1's evaluation)")
    p.add_argument("--top-p", type=cli.between(1e-9, 1), default=1.0)
    p.add_argument("--seed", type=cli.at_least(0), default=0)
    p.add_argument("--n", type=cli.at_least(1), default=1,
                   help="samples per question (parallel sampling, majority voting)")
    p.add_argument("--batch-size", type=cli.at_least(1), default=64,
                   help="most sequences decoded together")
    p.add_argument("--kv-memory-gb", type=cli.above(0), default=None,
                   help="KV pool size; default: 90%% of what the weights leave free on GPU, on CPU "
                        "enough for --batch-size full-context rows up to 4 GB")
    p.add_argument("--control", choices=sorted(CONTROL),
                   help="conditional-control prompt (paper §5.4 baselines)")
    p.add_argument("--control-value", type=cli.at_least(1), help="N for --control tokens/steps")
    p.add_argument("--step-forcing", action="store_true",
                   help="--control steps: end the thinking at '<|im_start|>0' (s1's "
                        "step-conditional control + budget forcing; s1 trained a "
                        "step-conditional model for it)")
    p.add_argument("--min-thinking-tokens", type=cli.at_least(0), default=0,
                   help="the end of thinking may not be drawn before this many thinking tokens")
    p.add_argument("--rejection-sampling", action="store_true",
                   help="resample until thinking ends within the cap")
    p.add_argument("--max-tries", type=cli.at_least(1), default=MAX_TRIES,
                   help="--rejection-sampling: most samples per question (s1's harness: no limit; "
                        "Figure 6: 655 on average at a 3,500-token budget)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="any field of sample.Setting, e.g. min_thinking_tokens=500 (a variant "
                        "without a flag of its own)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                   help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--dist-timeout-min", type=cli.above(0), default=60,
                   help="torchrun: collective timeout (torch's default, 10 min, is less than "
                        "loading 32B may take)")
    cli.add_tp_flag(p)
    cli.add_dry_run_flags(p, gpus=8)
    args = p.parse_args(argv)
    if args.dry_run:
        return args
    if sum(x is not None for x in (args.prompt, args.input)) != 1:
        p.error("give exactly one of --prompt, --input (with --output) or --dry-run "
                "(serve.py serves)")
    if args.input and not args.output:
        p.error("--input needs --output")
    try:  # the flags and any --setting NAME=VALUE, checked together by the Setting
        flags = dict(max_thinking_tokens=args.max_thinking_tokens, num_ignore=args.num_ignore,
                     ignore_str=args.ignore_str, min_thinking_tokens=args.min_thinking_tokens,
                     control=args.control, control_value=args.control_value,
                     step_forcing=args.step_forcing,
                     tries=args.max_tries if args.rejection_sampling else 0)
        for text in args.setting:
            flags.update(setting_fields(text))
        args.setting = setting_from(flags)
    except ValueError as e:
        p.error(f"--setting: {e}")
    s = args.setting
    if s.tries and (args.temperature if s.own_temperature is None else s.own_temperature) <= 0:
        p.error("--rejection-sampling needs an integer --max-thinking-tokens and --temperature > 0 "
                "(greedy retries would all be the same)")
    if s.control in ("tokens", "steps") and s.control_value is None:
        p.error(f"--control {s.control} needs --control-value")
    return args


if __name__ == "__main__":
    cli.main(main)
    parallel.exit_now()
