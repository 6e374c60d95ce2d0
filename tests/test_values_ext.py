"""The c backend's Value type in C (microgpt._values, ext/values.c): its operators call the arena
directly, a Value gives its slot back when it dies (at once in its own thread, at the next
compaction when it dies in another), it holds exactly one reference to its arena, and it is not
tracked by the cycle collector. The Value API itself is tested on both backends elsewhere
(test_value.py, test_lifetime.py, test_threads.py, test_teach.py)."""
import fractions
import gc
import math
import os
import resource
import sys
import threading

import pytest

from conftest import require


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def test_cvalue_is_the_c_type_and_the_derived_ops_of_the_seed():
    from microgpt import native
    from microgpt.ops import DerivedOps
    from microgpt.engine import Value as PythonValue
    assert native.CValue is native._values.CValue and issubclass(native.CValue, DerivedOps)
    a, b = native.CValue(2.0), native.CValue(-3.0)
    pa, pb = PythonValue(2.0), PythonValue(-3.0)
    cases = [lambda x, y: x - y, lambda x, y: x / y, lambda x, y: -x, lambda x, y: 2.5 - x, lambda x, y: 2.5 / x,
             lambda x, y: x - 0.5, lambda x, y: x / 3, lambda x, y: 0 + x, lambda x, y: 1.5 * x, lambda x, y: x ** -2.5,
             lambda x, y: sum([x, y, x * y]), lambda x, y: (x * y).relu() + (x / 4).exp().log()]
    for case in cases:
        c, p = case(a, b), case(pa, pb)
        c.backward()
        p.backward()
        assert (c.data, a.grad, b.grad) == (p.data, pa.grad, pb.grad)
        for v in (a, b, pa, pb):
            v.grad = 0.0


def test_numbers_of_other_types_and_operands_that_are_not_numbers():
    from microgpt.native import CValue
    assert (CValue(1.0) + fractions.Fraction(1, 4)).data == 1.25   # anything float() takes, as cffi did
    assert (CValue(1.0) * True).data == 1.0
    for bad in ("a", None, [1.0]):
        with pytest.raises(TypeError, match="unsupported operand"):
            CValue(1.0) + bad
        with pytest.raises(TypeError):                              # Python's own message ([1.0] * x: repetition)
            bad * CValue(1.0)
    with pytest.raises(OverflowError):
        CValue(1.0) + 10 ** 400
    with pytest.raises(TypeError, match="Value \\*\\* Value is not supported"):
        CValue(2.0) ** CValue(3.0)
    with pytest.raises(TypeError, match="unsupported operand"):
        2.0 ** CValue(3.0)                                        # no reflected power, as before
    with pytest.raises(TypeError):
        CValue("1.0")
    with pytest.raises(AttributeError):
        del CValue(1.0).data


def test_python_value_power_of_a_c_value_says_what_is_wrong():
    from microgpt.engine import Value as PythonValue
    from microgpt.native import CValue
    with pytest.raises(TypeError, match="Value \\*\\* Value is not supported"):
        PythonValue(2.0) ** CValue(3.0)


def test_errors_of_c_are_the_python_layers_exceptions():
    from microgpt.native import CValue
    with pytest.raises(ValueError, match="math domain error"):
        CValue(-1.0).log()
    with pytest.raises(OverflowError, match="math range error"):
        CValue(1000.0).exp()
    with pytest.raises(ZeroDivisionError):
        CValue(0.0) ** -1
    assert math.isnan(CValue(float("nan")).data)     # a NaN node is data, not a refused slot


def test_a_value_holds_one_reference_to_its_arena_and_none_after_it_dies():
    from microgpt.native import CValue, default_arena
    arena = default_arena()
    before = sys.getrefcount(arena)
    x = CValue(1.0)
    values = [x * 2.0 + x for _ in range(100)]
    assert sys.getrefcount(arena) == before + 1 + len(values)
    del values, x
    assert sys.getrefcount(arena) == before
    assert not gc.is_tracked(CValue(1.0))             # in no cycle: it refers only to its arena


def test_a_value_dying_in_its_own_thread_gives_its_slot_back_at_once():
    from microgpt.native import CValue, default_arena
    arena = default_arena()
    x = CValue(1.0)
    slots = arena.slots
    for _ in range(1000):
        x * 2.0 + 1.0
    assert arena.slots == slots


def test_a_value_dying_in_another_thread_is_released_by_its_own_thread_later():
    from microgpt import native
    arena = native.default_arena()
    kept = [native.CValue(float(i)) * 3.0 for i in range(50)]
    slots = arena.slots
    t = threading.Thread(target=kept.clear)         # the last references die in that thread
    t.start()
    t.join()
    assert native._values.dead(arena) == 50 and arena.slots == slots   # C not touched from there
    arena.release()
    assert native._values.dead(arena) == 0 and arena.slots == slots - 50


def test_slots_that_died_in_another_thread_are_released_before_a_compaction():
    from microgpt import native
    arena = native.default_arena()
    kept = [native.CValue(float(i)) for i in range(100)]
    t = threading.Thread(target=kept.clear)
    t.start()
    t.join()
    assert native._values.dead(arena) == 100
    x = native.CValue(1.0)
    # a compaction is due by the time the nodes have doubled since the last (or reached 8192):
    # C asks for the dead slots first
    for _ in range(2 * arena.nodes + 2 * (1 << 13)):
        y = x + 1.0
    assert native._values.dead(arena) == 0
    assert y.data == 2.0


def test_wrap_and_open_refuse_what_is_not_an_open_values_arena():
    from microgpt import native
    with pytest.raises(TypeError, match="ValuesArena"):
        native._values.wrap(object(), 0)
    with pytest.raises(ValueError, match="open already"):
        native._values.open_arena(native.default_arena())
    bare = native._values.ValuesCore()
    with pytest.raises(ValueError, match="not opened"):
        native.CValue(1.0, bare)
    with pytest.raises(ValueError, match="not a slot"):
        native._values.wrap(bare, 0)


@pytest.mark.skipif(os.environ.get("MICROGPT_SANITIZED") == "1", reason="ASan's own memory would dominate")
def test_a_million_ops_run_at_flat_memory():
    from microgpt.native import CValue
    w = [CValue(0.1 * i) for i in range(10)]

    def ops(n):
        for _ in range(n // 20):
            y = w[0]
            for wi in w[1:]:
                y = y + wi * 2.0
            y.backward()

    ops(200_000)
    warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ops(1_000_000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - warm < 2048   # KB on Linux
