"""`microgpt profile`: the table, the JSON, the bit-identity verdict, the plot's fallback."""
import json

from conftest import C_OK, run_microgpt

from microgpt.profile import Result, rungs_agree


def test_profile_json_and_verdict(small_data, tmp_path):
    rungs = "python-nogc,python" + (",c-ops,c-fused,c-replay" if C_OK else "")
    out = tmp_path / "p.json"
    result = run_microgpt("profile", "--steps", 3, "--data", small_data, "--rungs", rungs, "--json", out)
    assert result.returncode == 0, result.stderr
    assert "bit-identical: yes" in result.stdout
    report = json.loads(out.read_text())
    assert report["bit_identical"] and report["steps"] == 3
    by_name = {r["rung"]: r for r in report["rungs"]}
    assert list(by_name) == rungs.split(",")
    first = report["rungs"][0]
    for r in report["rungs"]:
        assert len(r["losses"]) == 3 and r["losses"] == first["losses"]
        assert r["ms_step"] > 0 and r["nodes_step"] > 0
        assert abs(r["ms_forward"] + r["ms_backward"] + r["ms_adam"] - r["ms_step"]) < 1e-6
    if C_OK:
        # timed after a warm-up, a replayed step is a handful of C calls; op by op, one per node
        assert by_name["c-replay"]["calls_step"] <= 6
        assert by_name["c-ops"]["calls_step"] > by_name["c-ops"]["nodes_step"]


def test_rungs_agree_sees_one_differing_loss():
    a = Result("a", "", 2, losses=[1.0, 0.5], params_sha256="x")
    b = Result("b", "", 2, losses=[1.0, 0.5000000000000001], params_sha256="x")
    assert rungs_agree([a, a]) and not rungs_agree([a, b])


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
    for args, fragment in ((["--steps", "1"], "at least 2"), (["--rungs", "python,turbo"], "turbo")):
        result = run_microgpt("profile", "--data", small_data, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr and fragment in result.stderr


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
