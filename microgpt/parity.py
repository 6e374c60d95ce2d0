"""`python -m microgpt.parity`: does a training run reproduce the seed's own outputs?

The run is the JSON Lines file `microgpt train --metrics FILE` writes. Two references:

- the seed's figures shipped with this package (golden/seed_names_1000steps.txt: 1000 steps on
  makemore's names.txt), or another such file with --golden: every loss at full precision, the
  parameters' sha256 and the sampled names, all compared bit for bit;
- --seed-output FILE: what Karpathy's microgpt.py as published printed (its captured stdout). It
  prints each loss with 4 decimals and no parameter hash, so the losses are compared at those 4
  decimals (the run's exact loss formatted as the script formats it) and the names exactly.

Exit status 0: identical; 1: a difference (the first one is named); 2: unusable input.
This module also owns reading the seed's output format, which `microgpt profile` uses too.
"""
import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

from . import limits
from .digest import sha256

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "seed_names_1000steps.txt")
PRINTED_DECIMALS = 4  # the seed prints f"{loss:.4f}"

_STEP = re.compile(r"^step\s+(\d+) /\s*(\d+) \| loss (\S+)(?: \| (\S+))?$")
_SHA = re.compile(r"^params sha256 ([0-9a-f]{64})$")
_SAMPLE = re.compile(r"^sample\s+\d+: (.*)$")
_DATA_SHA = re.compile(r"^# data sha256 ([0-9a-f]{64})$")


class ParityError(ValueError):
    """An input that cannot be compared, with a message fit for one line."""


@dataclass
class SeedOutput:
    """What the seed printed: per step (1-based) the schedule length, the loss as printed (4
    decimals) and, from the reference with --full, the loss at full precision; then the hash and
    the samples."""
    total_steps: dict = field(default_factory=dict)
    printed: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)
    params_sha256: str | None = None
    samples: list = field(default_factory=list)
    data_sha256: str | None = None

    @property
    def full_precision(self):
        return bool(self.printed) and len(self.full) == len(self.printed)


def parse_seed_output(text):
    """The seed's stdout (or a golden file made from it). The published script ends its step
    lines with a carriage return, so lines are split on either end-of-line character."""
    out = SeedOutput()
    for line in re.split(r"[\r\n]", text):  # not stripped: a sampled name can be empty ("sample  7: ")
        if m := _STEP.match(line):
            step = int(m.group(1))
            out.total_steps[step], out.printed[step] = int(m.group(2)), m.group(3)
            if m.group(4):
                out.full[step] = float(m.group(4))
        elif m := _SHA.match(line):
            out.params_sha256 = m.group(1)
        elif m := _SAMPLE.match(line):
            out.samples.append(m.group(1))
        elif m := _DATA_SHA.match(line):
            out.data_sha256 = m.group(1)
    return out


def printed_loss(loss):
    """A loss as the seed prints it."""
    return f"{loss:.{PRINTED_DECIMALS}f}"


@dataclass
class Run:
    losses: dict
    params_sha256: str | None
    samples: list | None


def regular_file(path, what):
    """path, if it is a regular file (a device such as /dev/zero would be read until memory runs
    out), else ParityError."""
    try:
        limits.regular_file_size(path, what)
    except OSError as e:
        raise ParityError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ParityError(str(e)) from None
    return path


def read_text(path, what):
    try:
        with open(regular_file(path, what), encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ParityError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None


def read_metrics(path):
    """A `microgpt train --metrics` file: steps' losses, then params_sha256 and samples."""
    losses, sha, samples = {}, None, None
    for n, line in enumerate(read_text(path, "metrics file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "step" in record:
                losses[int(record["step"])] = float(record["loss"])
            if "params_sha256" in record:
                sha = str(record["params_sha256"])
            if "samples" in record:
                samples = [str(s) for s in record["samples"]]
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as e:
            raise ParityError(f"{path}:{n}: not a line of `microgpt train --metrics` ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
    if not losses:
        raise ParityError(f"{path} has no step records: is it a `microgpt train --metrics` file?")
    return Run(losses, sha, samples)


def read_reference(path):
    ref = parse_seed_output(read_text(path, "seed output"))
    if not ref.printed:
        raise ParityError(f"{path} has no `step N / M | loss X` lines: is it the seed's output?")
    return ref


def file_sha256(path):
    digest = sha256()
    try:
        with open(regular_file(path, "data file"), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise ParityError(f"cannot read data file {path}: {e.strerror}") from None
    return digest.hexdigest()


def compare(run, ref, data_sha256=None):
    """(identical, lines): the differences found, then a verdict line."""
    problems = []
    if data_sha256 is not None and ref.data_sha256 and data_sha256 != ref.data_sha256:
        problems.append(f"data: the file's sha256 is {data_sha256[:16]}..., the reference's data "
                        f"{ref.data_sha256[:16]}...: not the same data")
    if sorted(run.losses) != sorted(ref.printed):
        problems.append(f"steps: the run has {len(run.losses)} steps, the reference {len(ref.printed)} "
                        f"(train with --steps {len(ref.printed)})")
    full = ref.full_precision
    same = 0
    for step in sorted(ref.printed):
        if step not in run.losses:
            continue
        loss = run.losses[step]
        if full:
            equal = loss == ref.full[step] and math.copysign(1, loss) == math.copysign(1, ref.full[step])
        else:
            equal = printed_loss(loss) == ref.printed[step]
        if equal:
            same += 1
        elif len(problems) < 5:
            theirs = repr(ref.full[step]) if full else ref.printed[step]
            ours = repr(loss) if full else f"{printed_loss(loss)} ({loss!r})"
            problems.append(f"step {step}: loss {ours} != the seed's {theirs}")
    if ref.params_sha256 is None:
        sha_word = "no parameter hash to compare (the script prints none)"
    elif run.params_sha256 == ref.params_sha256:
        sha_word = "params sha256 ok"
    else:
        sha_word = "params sha256 differs"
        problems.append(f"params sha256 {run.params_sha256} != the seed's {ref.params_sha256}")
    if run.samples is None:
        samples_word = "no samples in the run"
        problems.append("samples: the metrics file has no samples record (did the run finish?)")
    else:
        matched = sum(a == b for a, b in zip(run.samples, ref.samples))
        samples_word = f"{matched}/{len(ref.samples)} samples ok"
        if run.samples != ref.samples:
            problems.append(f"samples: {run.samples[:5]}... != the seed's {ref.samples[:5]}...")
    how = ("bit-identical" if full else
           f"equal at the {PRINTED_DECIMALS} decimals the seed's script prints (the run's losses rounded as it rounds)")
    verdict = (f"verdict: {'IDENTICAL' if not problems else 'DIFFERENT'}"
               f"{'' if full else f' at {PRINTED_DECIMALS} decimals'} "
               f"({same}/{len(ref.printed)} losses {how}, {sha_word}, {samples_word})")
    return not problems, problems + [verdict]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, as every microgpt command
        raise ParityError(message)


def build_parser():
    p = _Parser(prog="python -m microgpt.parity", description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", help="the run's `microgpt train --metrics` file")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--golden", metavar="FILE", default=None,
                     help="the seed's --full output to compare with, bit for bit (default: the shipped figures "
                          "of 1000 steps on names.txt)")
    ref.add_argument("--seed-output", metavar="FILE",
                     help="the captured stdout of Karpathy's microgpt.py as published: compared at the 4 "
                          "decimals it prints")
    p.add_argument("--data", metavar="FILE", help="also check that this data file is the one the reference used")
    return p


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        ref = read_reference(args.seed_output or args.golden or GOLDEN)
        run = read_metrics(args.metrics)
        identical, lines = compare(run, ref, file_sha256(args.data) if args.data else None)
    except ParityError as e:
        print(f"microgpt.parity: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
