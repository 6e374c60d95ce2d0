"""The python backend pauses the cyclic GC during a step: safe only if the graph leaves no cycles
and nothing behind. These tests check both."""
import gc
import os
import random

import pytest

from microgpt.engine import Value
from microgpt.modes import new_graph
from microgpt.model import GPT, Config
from microgpt.sampling import sample
from microgpt.training import train_step


def live_values():
    return sum(1 for o in gc.get_objects() if type(o) is Value)


def test_steps_leave_no_values_and_no_cycles_behind():
    random.seed(3)
    for mode in ("seed", "fused"):
        model = GPT(Config(vocab_size=6, n_embd=8, n_head=2, block_size=5), new_graph("python", mode))
        gc.collect()
        baseline = live_values()
        assert baseline >= model.num_params
        for step in range(4):
            train_step(model, [5, 0, 1, 2, 3, 4, 5], step, 4, 0.01)
        sample(model, __import__("microgpt").Tokenizer("abcde"), 0.5)
        assert live_values() == baseline  # the graphs were freed by reference counting alone
        assert gc.collect() == 0  # and no cycle was waiting for the collector


def test_gc_state_is_restored_after_a_step():
    random.seed(0)
    model = GPT(Config(vocab_size=4, n_embd=4, n_head=1, block_size=3), new_graph("python"))
    assert gc.isenabled()
    train_step(model, [3, 0, 1, 3], 0, 1, 0.01)
    assert gc.isenabled()
    gc.disable()
    try:
        train_step(model, [3, 0, 1, 3], 0, 1, 0.01)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.skipif(os.environ.get("MICROGPT_SANITIZED") == "1",
                    reason="under AddressSanitizer, RSS measures its shadow memory and quarantine, not the arena")
def test_c_backend_peak_rss_no_higher_than_python(small_data):
    """Peak resident memory of a whole training run, each backend in its own process."""
    from conftest import require, run_microgpt
    require("c")
    code = ("import resource, sys; from microgpt.cli import main; "
            f"main(['train', '--data', {str(small_data)!r}, '--steps', '300', '--samples', '0', '--backend', sys.argv[1]]); "
            "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = {}
    for backend in ("python", "c"):
        result = run_microgpt(code=code.replace("sys.argv[1]", repr(backend)), check=True)
        peaks[backend] = int(result.stdout.split("peak ")[-1])
    assert peaks["c"] <= peaks["python"], peaks
