"""Training runs reproduce the seed's own outputs bit for bit, every way the graph can be built;
and `python -m microgpt.parity`, the check the README gives users, says so (and says when not).

The seed's figures are shipped: tests/golden/ (30 steps on a small data set the tests write, and
20 steps on names.txt) and microgpt/golden/ (1000 steps on names.txt, what users check against).
The seed's data, makemore's names.txt, is not shipped: those tests need MICROGPT_NAMES (or ../shared)."""
import json
import pathlib
import re

import pytest

from conftest import GOLDEN, NAMES_SHA256, SHARED, run_microgpt
from microgpt import parity


def golden(path):
    ref = parity.parse_seed_output(path.read_text())
    steps = sorted(ref.full)
    return [ref.full[s] for s in steps], ref.params_sha256, ref.samples


def train(data, steps, backend, mode, tmp_path):
    metrics = tmp_path / f"{backend}-{mode}.jsonl"
    result = run_microgpt("train", "--data", data, "--steps", steps, "--backend", backend, "--graph", mode,
                          "--metrics", metrics)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    losses = [r["loss"] for r in records if "step" in r]
    samples = re.findall(r"^sample\s+\d+: (.*)$", result.stdout, re.M)
    assert samples == records[-1]["samples"]
    return losses, records[-1]["params_sha256"], samples, result.stdout


def check(*args):
    """`python -m microgpt.parity ARGS` on the package under test (run as run_microgpt runs it)."""
    import os
    import pathlib
    import subprocess
    import sys

    import microgpt
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "microgpt.parity", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=pathlib.Path(args[0]).parent if args else None)


def test_small_data_matches_the_seed(small_data, graph_mode, tmp_path):
    """Self-contained: tests/golden/seed_small_30steps.txt is the seed's own --full output on
    the small data set (made by running the seed's script once)."""
    backend, mode = graph_mode
    losses, sha, samples, _ = train(small_data, 30, backend, mode, tmp_path)
    assert (losses, sha, samples) == golden(GOLDEN / "seed_small_30steps.txt")
    assert len(losses) == 30 and len(samples) == 20


def test_names_20_steps_match_the_seed_golden(names_txt, graph_mode, tmp_path):
    backend, mode = graph_mode
    losses, sha, samples, stdout = train(names_txt, 20, backend, mode, tmp_path)
    assert (losses, sha, samples) == golden(GOLDEN / "seed_names_20steps.txt")
    assert stdout.splitlines()[:4] == ["num docs: 32033", "vocab size: 27", "num params: 4192",
                                       "step    1 /   20 | loss 3.3660"]
    result = check(tmp_path / f"{backend}-{mode}.jsonl", "--golden", GOLDEN / "seed_names_20steps.txt")
    assert result.returncode == 0 and "verdict: IDENTICAL (20/20 losses bit-identical" in result.stdout, result.stdout


def test_names_1000_steps_match_the_shipped_figures(names_txt, tmp_path):
    """The README's parity check, as a user runs it (the fastest backend: 1000 steps take a second)."""
    backend = "c" if run_microgpt(code="import microgpt; print(microgpt.get_backend())").stdout.strip() == "c" \
        else pytest.skip("1000 steps on the python backend take too long for the test suite")
    metrics = tmp_path / "m.jsonl"
    run_microgpt("train", "--data", names_txt, "--metrics", metrics, "--backend", backend, check=True)
    result = check(metrics, "--data", names_txt)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "verdict: IDENTICAL (1000/1000 losses bit-identical, params sha256 ok, 20/20 samples ok)"]


def test_the_shipped_figures_are_the_seeds():
    """microgpt/golden/ holds the seed's 1000-step output: 1000 losses whose 4-decimal print agrees
    with their full precision, the hash, the 20 names it samples (kamon, ann, karai...); and, with
    ../shared present, the same figures as its golden output."""
    ref = parity.read_reference(parity.GOLDEN)
    assert sorted(ref.full) == list(range(1, 1001)) and set(ref.total_steps.values()) == {1000}
    assert all(parity.printed_loss(ref.full[s]) == ref.printed[s] for s in ref.full)
    assert ref.samples[:3] == ["kamon", "ann", "karai"] and len(ref.samples) == 20
    assert ref.params_sha256 == "eb45112c845c28a8aaa286d20c6f0db498088a9689ba9ff7ad0dc5ddeb4342de"
    assert ref.data_sha256 == NAMES_SHA256
    for name in ("seed_names_1000steps.txt", "seed_names_20steps.txt"):
        original = SHARED / "golden" / name
        shipped = pathlib.Path(parity.GOLDEN) if name.startswith("seed_names_1000") else GOLDEN / name
        if original.exists():
            theirs = parity.parse_seed_output(original.read_text())
            ours = parity.parse_seed_output(shipped.read_text())
            assert (ours.full, ours.printed, ours.params_sha256, ours.samples) == \
                (theirs.full, theirs.printed, theirs.params_sha256, theirs.samples)


def test_golden_comparison_can_fail(small_data, tmp_path):
    """Another seed gives another run: the comparison above is not vacuous."""
    metrics = tmp_path / "m.jsonl"
    run_microgpt("train", "--data", small_data, "--steps", 3, "--seed", 7, "--metrics", metrics, "--backend", "python",
                 check=True)
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()[:3]]
    assert losses != golden(GOLDEN / "seed_small_30steps.txt")[0][:3]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 30-step run on the small data set, its metrics file and the seed's golden output for it."""
    from small_data import write_small_data
    folder = tmp_path_factory.mktemp("small_run")
    data = write_small_data(folder / "small.txt")
    metrics = folder / "m.jsonl"
    run_microgpt("train", "--data", data, "--steps", 30, "--metrics", metrics, "--backend", "python", check=True)
    return metrics, GOLDEN / "seed_small_30steps.txt"


def test_parity_says_identical(small_run):
    metrics, reference = small_run
    result = check(metrics, "--golden", reference)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "verdict: IDENTICAL (30/30 losses bit-identical, params sha256 ok, 20/20 samples ok)\n"


def rewrite_metrics(metrics, tmp_path, change):
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    change(records)
    out = tmp_path / "changed.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def test_parity_finds_one_ulp(small_run, tmp_path):
    """A loss one unit in the last place off is a difference, named by its step."""
    import math
    metrics, reference = small_run

    def nudge(records):
        records[16]["loss"] = math.nextafter(records[16]["loss"], math.inf)
    result = check(rewrite_metrics(metrics, tmp_path, nudge), "--golden", reference)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("step 17: loss ")
    assert result.stdout.splitlines()[-1].startswith("verdict: DIFFERENT (29/30 losses bit-identical")


def test_parity_finds_other_samples_and_hash(small_run, tmp_path):
    metrics, reference = small_run

    def tamper(records):
        records[-1]["samples"][0] += "x"
        records[-1]["params_sha256"] = "0" * 64
    result = check(rewrite_metrics(metrics, tmp_path, tamper), "--golden", reference)
    assert result.returncode == 1
    assert "params sha256 differs, 19/20 samples ok)" in result.stdout.splitlines()[-1]


def published_output(reference, tmp_path, change=None):
    """What the seed's script as published prints for the same run: each step line with its loss at
    4 decimals ended by a carriage return, no full-precision loss, no parameter hash."""
    ref = parity.parse_seed_output(reference.read_text())
    printed = dict(ref.printed)
    if change:
        change(printed)
    total = len(printed)
    text = "num docs: 96\nvocab size: 26\nnum params: 4160\n"
    text += "".join(f"step {s:4d} / {total:4d} | loss {printed[s]}\r" for s in sorted(printed))
    text += "\n--- inference (new, hallucinated names) ---\n"
    text += "".join(f"sample {i:2d}: {name}\n" for i, name in enumerate(ref.samples, 1))
    out = tmp_path / "seed.txt"
    out.write_text(text, newline="")
    return out


def test_parity_against_the_published_scripts_output(small_run, tmp_path):
    metrics, reference = small_run
    result = check(metrics, "--seed-output", published_output(reference, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ("verdict: IDENTICAL at 4 decimals (30/30 losses equal at the 4 decimals the seed's "
                             "script prints (the run's losses rounded as it rounds), no parameter hash to compare "
                             "(the script prints none), 20/20 samples ok)\n")


def test_parity_against_the_published_output_can_fail(small_run, tmp_path):
    metrics, reference = small_run

    def off(printed):
        printed[5] = f"{float(printed[5]) + 1e-4:.4f}"
    result = check(metrics, "--seed-output", published_output(reference, tmp_path, off))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("step 5: loss ")
    assert "DIFFERENT at 4 decimals (29/30" in result.stdout.splitlines()[-1]


def test_parity_checks_the_data_file(small_run, small_data):
    """The shipped figures were made on makemore's names.txt: another data file is named as such."""
    metrics, _ = small_run
    result = check(metrics, "--data", small_data)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("data: the file's sha256 is ")


@pytest.mark.parametrize("case", ["missing metrics", "not json", "not metrics", "no steps", "golden without steps",
                                  "missing golden", "no arguments", "both references", "missing data",
                                  "deep json", "huge step", "device metrics", "device data", "device golden"])
def test_parity_bad_input_is_one_line(case, small_run, tmp_path):
    metrics, reference = small_run
    bad = tmp_path / "bad.txt"
    bad.write_text({"not json": "{oops\n", "not metrics": "[1, 2]\n", "no steps": '{"params_sha256": "ab"}\n',
                    "deep json": "[" * 100000 + "\n", "huge step": '{"step": 1e400, "loss": 1}\n'}
                   .get(case, "hello\n"))
    args = {"missing metrics": [tmp_path / "nope.jsonl"], "not json": [bad], "not metrics": [bad], "no steps": [bad],
            "golden without steps": [metrics, "--golden", bad], "missing golden": [metrics, "--golden", tmp_path / "no"],
            "no arguments": [], "both references": [metrics, "--golden", reference, "--seed-output", reference],
            "missing data": [metrics, "--data", tmp_path / "no.txt"], "deep json": [bad], "huge step": [bad],
            "device metrics": ["/dev/zero"], "device data": [metrics, "--data", "/dev/zero"],
            "device golden": [metrics, "--golden", "/dev/zero"]}[case]
    result = check(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("microgpt.parity: error: ") and "Traceback" not in result.stderr
