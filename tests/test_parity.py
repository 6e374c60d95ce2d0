"""Training runs reproduce the seed's own outputs bit for bit, every way the graph can be built."""
import json
import re
import subprocess
import sys

from conftest import GOLDEN, run_microgpt


def golden(path):
    text = path.read_text()
    losses = [float(x) for x in re.findall(r"^step\s+\d+ /\s*\d+ \| loss \S+ \| (\S+)$", text, re.M)]
    sha = re.search(r"^params sha256 ([0-9a-f]{64})$", text, re.M).group(1)
    samples = re.findall(r"^sample\s+\d+: (.*)$", text, re.M)
    return losses, sha, samples


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


def test_small_data_matches_the_seed(small_data, graph_mode, tmp_path):
    """Self-contained: tests/golden/seed_small_30steps.txt is the seed's own --full output on
    the small data set (made by running ../shared/reference/seed_microgpt.py once)."""
    backend, mode = graph_mode
    losses, sha, samples, _ = train(small_data, 30, backend, mode, tmp_path)
    assert (losses, sha, samples) == golden(GOLDEN / "seed_small_30steps.txt")


def test_names_20_steps_match_the_seed_golden(shared, graph_mode, tmp_path):
    backend, mode = graph_mode
    losses, sha, samples, stdout = train(shared / "data" / "names.txt", 20, backend, mode, tmp_path)
    assert (losses, sha, samples) == golden(shared / "golden" / "seed_names_20steps.txt")
    assert stdout.splitlines()[:4] == ["num docs: 32033", "vocab size: 27", "num params: 4192",
                                       "step    1 /   20 | loss 3.3660"]
    # and the shared checker agrees
    check = subprocess.run([sys.executable, str(shared / "tools" / "parity.py"), str(tmp_path / f"{backend}-{mode}.jsonl"),
                            str(shared / "golden" / "seed_names_20steps.txt")], capture_output=True, text=True)
    assert "verdict: IDENTICAL" in check.stdout, check.stdout


def test_golden_comparison_can_fail(small_data, tmp_path):
    """Another seed gives another run: the comparison above is not vacuous."""
    metrics = tmp_path / "m.jsonl"
    run_microgpt("train", "--data", small_data, "--steps", 3, "--seed", 7, "--metrics", metrics, "--backend", "python",
                 check=True)
    losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()[:3]]
    assert losses != golden(GOLDEN / "seed_small_30steps.txt")[0][:3]
