"""`microgpt profile`: the table, the rounds and their spread, the JSON, the bit-identity verdict,
the plot and its fallback."""
import argparse
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest
from conftest import C_OK, run_microgpt

import microgpt.profile as profile
from microgpt.profile import SPREAD_MARK, Result, Round, format_table, rungs_agree

FAST_RUNGS = "python,c-replay" if C_OK else "python-nogc,python"

# `microgpt profile` with a --rounds flag, whether or not cli.py has it yet: the parser is wrapped
# to add the flag only when it is missing, then main() runs as usual (its error handling included)
WITH_ROUNDS = """
import argparse, sys
from microgpt import cli
build = cli.build_parser
def build_with_rounds():
    parser = build()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["profile"]
    if not any("--rounds" in a.option_strings for a in sub._actions):
        sub.add_argument("--rounds", type=int, default=5)
    return parser
cli.build_parser = build_with_rounds
sys.exit(cli.main(sys.argv[1:]))
"""


def profile_cli(*args):
    return run_microgpt(code=WITH_ROUNDS.replace("sys.argv[1:]", repr(["profile", *map(str, args)])))


def run_in_process(small_data, rungs, rounds, steps=2, **extra):
    args = argparse.Namespace(steps=steps, data=str(small_data), json=None, plot=None, rungs=rungs,
                              seed_script=None, rounds=rounds)
    for key, value in extra.items():
        setattr(args, key, value)
    return profile.cmd_profile(args)


def test_profile_json_and_verdict(small_data, tmp_path):
    rungs = "python-nogc,python" + (",c-ops,c-fused,c-replay" if C_OK else "")
    out = tmp_path / "p.json"
    result = run_microgpt("profile", "--steps", 3, "--data", small_data, "--rungs", rungs, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "bit-identical: yes" in result.stdout and "in the warm-up and every timed round" in result.stdout
    report = json.loads(out.read_text())
    assert report["bit_identical"] and report["steps"] == 3 and report["rounds"] == profile.DEFAULT_ROUNDS
    by_name = {r["rung"]: r for r in report["rungs"]}
    assert list(by_name) == rungs.split(",")
    first = report["rungs"][0]
    for r in report["rungs"]:
        assert len(r["losses"]) == 3 and r["losses"] == first["losses"]
        assert r["ms_step"] > 0 and r["nodes_step"] > 0
        rounds = r["rounds"]
        assert len(rounds) == profile.DEFAULT_ROUNDS
        for x in rounds:  # each round's phases add up to its step; its bits are the first round's
            assert abs(x["ms_forward"] + x["ms_backward"] + x["ms_adam"] - x["ms_step"]) < 1e-6
            assert x["same_losses"] and x["params_sha256"] == r["params_sha256"]
        totals = [x["ms_step"] for x in rounds]
        assert r["ms_step"] == statistics.median(totals)
        assert r["ms_adam"] == statistics.median(x["ms_adam"] for x in rounds)
        assert r["spread"] == pytest.approx((max(totals) - min(totals)) / r["ms_step"])
    if C_OK:
        # timed after a warm-up, a replayed step is a handful of C calls; op by op, one per node
        assert by_name["c-replay"]["calls_step"] <= 6
        assert by_name["c-ops"]["calls_step"] > by_name["c-ops"]["nodes_step"]


def test_rungs_agree_sees_one_differing_loss():
    a = Result("a", "", 2, losses=[1.0, 0.5], params_sha256="x")
    b = Result("b", "", 2, losses=[1.0, 0.5000000000000001], params_sha256="x")
    assert rungs_agree([a, a]) and not rungs_agree([a, b])


def test_rungs_agree_sees_a_round_or_warm_up_that_differs():
    def timed(*shas, same=True, warmup_same=True):
        rounds = [Round(1.0, 0.5, 0.4, 0.1, 0.0, sha, same_losses=same if i else True) for i, sha in enumerate(shas)]
        return Result("a", "", 2, losses=[1.0], params_sha256=shas[0], rounds=rounds, warmup_same=warmup_same)
    assert timed("x", "x", "x").rounds_differ() is None and rungs_agree([timed("x", "x", "x")])
    assert timed("x", "x", "y").rounds_differ() == "round 3" and not rungs_agree([timed("x", "x", "y")])
    assert timed("x", "x", same=False).rounds_differ() == "round 2"
    assert timed("x", "x", warmup_same=False).rounds_differ() == "the warm-up"


def test_the_verdict_says_no_when_one_round_differs(small_data, monkeypatch, capsys):
    real_step, calls = profile.train_step, [0]

    def step_off_in_round_3(*args, **kwargs):  # 2 steps a pass: the warm-up, round 1, round 2, then round 3
        calls[0] += 1
        loss = real_step(*args, **kwargs)
        return loss + 1e-12 if calls[0] == 7 else loss

    monkeypatch.setattr(profile, "train_step", step_off_in_round_3)
    assert run_in_process(small_data, "python", rounds=3) == 1
    out = capsys.readouterr().out
    assert "python: round 3 gave other losses or parameters than its round 1" in out
    assert "bit-identical: NO" in out


def test_the_verdict_says_no_when_the_warm_up_differs(small_data, monkeypatch, capsys):
    real_step, calls = profile.train_step, [0]

    def step_off_in_warm_up(*args, **kwargs):
        calls[0] += 1
        loss = real_step(*args, **kwargs)
        return loss * 2 if calls[0] == 1 else loss

    monkeypatch.setattr(profile, "train_step", step_off_in_warm_up)
    assert run_in_process(small_data, "python", rounds=2) == 1
    out = capsys.readouterr().out
    assert "python: the warm-up gave other losses" in out and "bit-identical: NO" in out


def fake_clock(slowing):
    """A clock that ticks by one unit a call (steady), or by one more unit each call (a machine
    slowing down: each round then takes longer than the one before, whatever the calls per round)."""
    state = {"now": 0.0, "tick": 1e-4}

    def clock():
        state["now"] += state["tick"]
        if slowing:
            state["tick"] += 1e-4
        return state["now"]
    return clock


def row(out, rung):
    return next(line for line in out.splitlines() if line.startswith(rung + " "))


@pytest.mark.parametrize("slowing", [False, True])
def test_a_large_spread_is_marked(small_data, tmp_path, monkeypatch, capsys, slowing):
    monkeypatch.setattr(profile, "clock", fake_clock(slowing))
    was_enabled = gc.isenabled()
    gc.disable()  # no collection may add clock calls to a round (rounds start with gc.collect())
    try:
        assert run_in_process(small_data, FAST_RUNGS, rounds=3, json=str(tmp_path / "p.json")) == 0
    finally:
        if was_enabled:
            gc.enable()
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    assert "median ms/step" in header and "spread" in header
    assert f"{SPREAD_MARK} marks a spread over 10%" in out
    report = json.loads((tmp_path / "p.json").read_text())
    for r in report["rungs"]:
        totals = [x["ms_step"] for x in r["rounds"]]
        if slowing:  # each round slower than the last: over 25% apart for a rung after a few passes
            assert totals == sorted(totals) and r["spread"] > 0.25 > profile.SPREAD_LIMIT
            assert row(out, r["rung"]).split()[2:4] == [f"{100 * r['spread']:.1f}%", SPREAD_MARK]
        else:
            assert r["spread"] == pytest.approx(0, abs=1e-9)
            assert row(out, r["rung"]).split()[2] == "0.0%" and SPREAD_MARK not in row(out, r["rung"])


def test_the_seed_scripts_one_run_has_no_spread():
    seed = Result(profile.SEED_SCRIPT_RUNG, "the seed's script", 2, ms_step=200.0)
    rung = Result("python", "fused", 2, ms_step=20.0, spread=0.02, speedup=10.0, ms_forward=8.0, ms_backward=10.0,
                  ms_adam=2.0, nodes_step=7000, ns_node=2900.0)
    table = format_table([seed, rung])
    assert row(table, profile.SEED_SCRIPT_RUNG).split()[1:3] == ["200.000", "-"]
    assert row(table, "python").split()[1:3] == ["20.000", "2.0%"]
    assert "seed-script: timed once (it is slow), so no spread" in table
    assert SPREAD_MARK not in row(table, "python")


def test_plot_writes_a_png(small_data, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    assert run_in_process(small_data, FAST_RUNGS, rounds=2, plot=str(out)) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_a_rung_without_phases_or_rounds(tmp_path):
    pytest.importorskip("matplotlib")
    seed = Result(profile.SEED_SCRIPT_RUNG, "the seed's script", 2, ms_step=280.0)
    rounds = [Round(ms, ms / 2, ms / 3, ms / 6, 0.0, "x") for ms in (0.1, 0.15, 0.2)]
    fast = Result("c-replay", "replay", 2, ms_step=0.15, spread=0.66, speedup=1866.7, ms_forward=0.075,
                  ms_backward=0.05, ms_adam=0.025, rounds=rounds)
    out = tmp_path / "p.png"
    assert profile.plot([seed, fast], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(small_data, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from microgpt.cli import main; "
            f"sys.exit(main(['profile', '--steps', '2', '--data', {str(small_data)!r}, '--rungs', 'python', "
            f"'--plot', {str(tmp_path / 'p.png')!r}]))")
    result = run_microgpt(code=code)
    # refused before running any rung (issue 9): exit 2, one line, no table
    assert result.returncode == 2, result.stderr
    assert "pip install" in result.stderr and "matplotlib" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "running" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "p.png").exists()


def test_profile_argument_errors(small_data):
    """Steps and rounds are bounded (a profile holds every step's tokens and losses): a huge
    count is refused before anything runs, not after memory runs out."""
    for args, fragment in ((["--steps", "1"], "from 2 to"), (["--steps", "100000000000"], "from 2 to 100000"),
                           (["--rungs", "python,turbo"], "turbo"), (["--rounds", "10000000"], "from 1 to 1000")):
        result = run_microgpt("profile", "--data", small_data, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr and fragment in result.stderr


@pytest.mark.parametrize("rounds", ["0", "-3", "1001"])
def test_rounds_below_one_is_a_one_line_error(small_data, rounds):
    result = profile_cli("--steps", 2, "--data", small_data, "--rungs", "python", "--rounds", rounds)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"microgpt: error: --rounds must be a whole number from 1 to 1000, got "
                                          f"{rounds}"]
    assert result.stdout == ""


def test_rounds_flag_sets_the_rounds(small_data, tmp_path):
    out = tmp_path / "p.json"
    result = profile_cli("--steps", 2, "--data", small_data, "--rungs", "python", "--rounds", 2, "--json", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["rounds"] == 2 and len(report["rungs"][0]["rounds"]) == 2
    assert "runs them 2 times from the same start" in result.stdout


def test_seed_script_that_is_not_the_seed_is_a_clear_error(small_data, tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("print('step    1 /    2 | loss 3.0')\n")
    result = run_microgpt("profile", "--steps", 2, "--data", small_data, "--rungs", "seed-script,python",
                          "--seed-script", fake)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did not print what the seed's script prints" in result.stderr


def test_seed_script_rung_runs_the_seed(shared, small_data):
    result = run_microgpt("profile", "--steps", 2, "--data", small_data, "--rungs", "seed-script,python",
                          "--seed-script", shared / "reference" / "seed_microgpt.py")
    assert result.returncode == 0, result.stderr
    assert "seed-script" in result.stdout and "bit-identical: yes, all 2 rungs" in result.stdout


def test_profile_runs_no_script_it_was_not_given(tmp_path, small_data):
    """Only --seed-script is run: never a script found beside the current folder (such as a
    development checkout's ../shared/reference/seed_microgpt.py), which would run code the user
    did not name."""
    planted = tmp_path / "shared" / "reference" / "seed_microgpt.py"
    planted.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    planted.write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "cwd").mkdir()
    import microgpt
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(microgpt.__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-m", "microgpt", "profile", "--steps", "2", "--rounds", "1", "--data",
                             str(small_data), "--rungs", "python"], capture_output=True, text=True, env=env,
                            cwd=tmp_path / "cwd", timeout=300)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    result = subprocess.run([sys.executable, "-m", "microgpt", "profile", "--steps", "2", "--rounds", "1", "--data",
                             str(small_data), "--rungs", "seed-script,python"], capture_output=True, text=True,
                            env=env, cwd=tmp_path / "cwd", timeout=300)
    assert result.returncode == 2 and "--seed-script" in result.stderr and not marker.exists()


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_profile_outputs_are_checked_before_it_runs(tmp_path, small_data, flag):
    result = profile_cli("--steps", 2, "--data", small_data, "--rungs", "python", flag, tmp_path / "nope" / "p.out")
    if flag == "--plot" and "matplotlib" in result.stderr:
        pytest.skip("matplotlib is not installed: --plot is refused before that")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert flag in result.stderr and "does not exist" in result.stderr and "running" not in result.stderr


def test_profile_json_and_plot_are_written_whole_under_the_names_given(tmp_path, small_data):
    pytest.importorskip("matplotlib")
    result = profile_cli("--steps", 2, "--rounds", 1, "--data", small_data, "--rungs", "python", "--json",
                         tmp_path / "p.json", "--plot", tmp_path / "chart")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "p.json").read_text())["steps"] == 2
    assert (tmp_path / "chart").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"   # a PNG under the name given
    assert "plot written to " + str(tmp_path / "chart") in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["chart", "p.json", "small.txt"])
