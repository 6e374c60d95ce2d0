"""c-backend Values are freed when nothing refers to them, with nothing for the user to do: the
issue's loop runs at flat memory; a Value still referred to keeps its node and its numbers; a
scope frees at once, and a Value used after its scope ended is a clear error."""
import os

import pytest

from conftest import require, run_microgpt


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def issue_loop(Value, iterations, w=None):
    w = w or [Value(0.1 * i) for i in range(10)]
    for _ in range(iterations):
        x = [Value(float(j)) for j in range(10)]
        loss = (sum(wi * xi for wi, xi in zip(w, x)) - 1.0) ** 2
        for p in w:
            p.grad = 0
        loss.backward()
        for p in w:
            p.data -= 1e-4 * p.grad
    return [p.data for p in w], loss


def test_default_arena_stays_small_and_results_match_python():
    from microgpt.engine import Value
    from microgpt.native import CValue, default_arena
    arena = default_arena()
    c_weights, c_loss = issue_loop(CValue, 3000)
    sizes = []
    for _ in range(3):
        issue_loop(CValue, 2000)
        sizes.append(arena.nbytes)
    py_weights, py_loss = issue_loop(Value, 3000)
    assert c_weights == py_weights and c_loss.data == py_loss.data  # every bit, across collections
    assert len(set(sizes)) == 1, sizes          # capacity reached its level and stays there
    assert arena.nodes < 4 * (1 << 13)          # nodes alive stay near the compaction's threshold
    assert arena.slots < 4 * (1 << 13)          # a slot for each Value alive, or dead since the compaction


def test_values_kept_alive_keep_their_nodes_through_collections():
    from microgpt.native import CValue, default_arena
    arena = default_arena()
    before = arena.collect()  # nodes other tests left alive in this thread
    x = CValue(1.5)
    chain = x
    for _ in range(3 * (1 << 13)):  # several compactions; only the newest Value and x stay referred to
        chain = chain * 1.0 + 0.0
    kept = [CValue(float(i)) * 2.0 for i in range(100)]
    for _ in range(1 << 15):
        CValue(7.0) + 1.0  # garbage
    alive = 1 + 2 * 3 * (1 << 13) + 2 * 100  # x and the chain's nodes below chain; kept and their leaves
    assert arena.nodes <= 2 * (before + alive + 8)  # compaction keeps under twice what is alive (+ temporaries)
    assert alive <= arena.collect() <= before + alive
    chain.backward()
    assert (chain.data, x.grad) == (1.5, 1.0)  # the whole chain below chain survived
    assert [v.data for v in kept] == [2.0 * i for i in range(100)]
    assert [c.data for c in kept[3]._children] == [3.0]


def test_labels_follow_their_nodes_through_a_collection():
    from microgpt.native import CValue, default_arena
    a = CValue(2.0)
    a.label = "a"
    b = a * 3.0
    b._children[0].label = "a again"  # another Value object of a's node: the label is the node's
    garbage = [CValue(1.0) for _ in range(100)]
    del b, garbage
    default_arena().collect()  # a's node moves down
    assert a.label == "a again"
    assert (a * 1.0)._children[0].label == "a again"


def test_distinct_labels_set_over_time_do_not_accumulate():
    """Each distinct label text takes a place in the arena's table: the texts no node holds any
    more are dropped as the table grows, and labels still held (also by a child a live Value
    reaches) keep their texts."""
    from microgpt.native import LABELS_BEFORE_COMPACTING, CValue, default_arena
    arena = default_arena()
    kept = CValue(2.0)
    kept.label = "kept"
    parent = kept * 3.0
    parent.label = "parent"
    for i in range(5 * LABELS_BEFORE_COMPACTING):
        v = CValue(1.0)
        v.label = f"label {i}"
    assert len(arena.label_texts) <= 2 * LABELS_BEFORE_COMPACTING
    assert (kept.label, parent.label, v.label) == ("kept", "parent", f"label {5 * LABELS_BEFORE_COMPACTING - 1}")
    assert parent._children[0].label == "kept"
    v.label = "kept"   # a text still in the table keeps its place
    assert v.label == "kept" and len(arena.label_ids) == len(set(arena.label_texts[1:]))


def test_scope_frees_at_once_and_refuses_its_values_afterwards():
    import microgpt
    from microgpt.native import CValue, default_arena
    arena = default_arena()
    w = CValue(3.0)
    before = arena.nodes
    with microgpt.scope():
        inner = w * 2.0
        kept_data = inner.data
        inner.backward()
    assert arena.nodes <= before
    assert kept_data == 6.0 and w.grad == 2.0 and w.data == 3.0
    with pytest.raises(ValueError, match="scope"):
        inner.data
    with pytest.raises(ValueError, match="stale"):
        inner + 1.0
    assert (w + 1.0).data == 4.0


def test_nested_scopes_and_a_collection_inside_one():
    import microgpt
    from microgpt.native import CValue
    outer_value = CValue(1.0)
    with microgpt.scope():
        a = CValue(2.0)
        with microgpt.scope():
            b = a * 2.0
            for _ in range(1 << 15):
                CValue(1.0) * 2.0  # garbage: compactions run inside both scopes
        with pytest.raises(ValueError):
            b.data
        assert a.data == 2.0
    with pytest.raises(ValueError):
        a.data
    assert outer_value.data == 1.0


def test_pickling_a_c_value_is_a_clear_error():
    import copy
    import pickle
    from microgpt.native import CValue
    for dump in (pickle.dumps, copy.copy):
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            dump(CValue(1.0))


@pytest.mark.skipif(os.environ.get("MICROGPT_SANITIZED") == "1",
                    reason="under AddressSanitizer, RSS measures its shadow memory and quarantine, not the arena")
def test_issue_loop_peak_rss_within_5mb_of_python():
    """The issue's script, each backend in its own process (fewer iterations than the issue's
    100,000 to stay quick: memory is flat, so more iterations change nothing)."""
    code = ("import resource, microgpt, sys; microgpt.set_backend(sys.argv[1]); from microgpt import Value\n"
            "w = [Value(0.1 * i) for i in range(10)]\n"
            "for it in range(20000):\n"
            "    x = [Value(float(j)) for j in range(10)]\n"
            "    loss = (sum(wi * xi for wi, xi in zip(w, x)) - 1.0) ** 2\n"
            "    for p in w: p.grad = 0\n"
            "    loss.backward()\n"
            "    for p in w: p.data -= 1e-4 * p.grad\n"
            "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, w[3].data)\n")
    out = {}
    for backend in ("python", "c"):
        result = run_microgpt(code=code.replace("sys.argv[1]", repr(backend)), check=True)
        _, peak, w3 = result.stdout.split()
        out[backend] = (int(peak), w3)
    assert out["c"][1] == out["python"][1]
    assert out["c"][0] - out["python"][0] <= 5 * 1024, out  # KiB


def test_scopes_nested_too_deep_are_a_clear_error():
    import microgpt
    from microgpt.native import lib
    opened = []
    try:
        with pytest.raises(RuntimeError, match=f"scopes nest at most {lib.MG_MAX_SCOPES} deep"):
            for _ in range(lib.MG_MAX_SCOPES + 1):
                opened.append(microgpt.scope().__enter__())
        assert len(opened) == lib.MG_MAX_SCOPES
    finally:
        for s in reversed(opened):
            s.__exit__(None, None, None)
