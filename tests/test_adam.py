"""Adam on the c backend against the seed's Adam in Python, on the numbers where they could part.

The C update computes g**2 and v_hat**0.5 as x*x and sqrt(x) where that provably gives pow()'s
bits (csrc/pymath.h), and calls pow() elsewhere. CPython's ** is the oracle: these tests feed
gradients and moments whose exact square or square root lies near a rounding midpoint, where
pow() and x*x or sqrt(x) do disagree, and require every bit of the result to match."""
import math
import random
import struct
from fractions import Fraction

import pytest

from conftest import require
from microgpt.graphs import PythonGraph
from microgpt.optim import BETA1, BETA2, EPS, LEARNING_RATE, learning_rate


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def midpoint_distance(exact, s):
    """|exact - s| in ULPs of s."""
    return abs(float((exact - Fraction(s)) / Fraction(math.ulp(s))))


def squares_near_midpoints(rng, n):
    """Gradients g whose exact g*g lies 0.4 to 0.5 ULP from the rounded one."""
    out = []
    while len(out) < n:
        g = rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-80, 80)
        if midpoint_distance(Fraction(g) ** 2, g * g) >= 0.4:
            out.append(rng.choice((-1, 1)) * g)
    return out


def roots_near_midpoints(rng, n, step):
    """Second moments v whose v_hat (after a step with gradient 0) has its exact square root
    0.4 to 0.5 ULP from the rounded one."""
    out = []
    while len(out) < n:
        v = rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-160, 40)
        v_hat = (BETA2 * v + (1 - BETA2) * 0.0 ** 2) / (1 - BETA2 ** (step + 1))
        s = math.sqrt(v_hat)
        # sqrt(v_hat) - s = (v_hat - s*s) / (sqrt(v_hat) + s)
        if abs(float((Fraction(v_hat) - Fraction(s) ** 2) / (2 * Fraction(s)) / Fraction(math.ulp(s)))) >= 0.4:
            out.append(v)
    return out


def c_adam_steps(params, grads, m, v, lr_t, beta1, beta2, eps, steps, threads=None):
    """The c backend's Adam from these moments, one step for each of `steps` (step numbers), the
    same gradients each time: (params, m, v) after each step. With threads, each step is split
    over a dense executor's threads, 8 parameters a part at least."""
    from microgpt.native import Arena, check, ffi, lib, owned
    n = len(params)
    arena = Arena()
    first = arena.leaves(params)
    arena.keep()
    check(lib.mg_adam_init(arena.ptr, n))
    check(lib.mg_adam_write(arena.ptr, ffi.new("double[]", m), ffi.new("double[]", v)))
    if threads is not None:
        executor = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")
        assert lib.mg_dense_set_threads(executor, threads, 1, 8) == threads
    states, cm, cv = [], ffi.new("double[]", n), ffi.new("double[]", n)
    for step in steps:
        for i, g in enumerate(grads):
            check(lib.mg_set_grad(arena.ptr, first + i, g))
        if threads is None:
            check(lib.mg_adam_step(arena.ptr, lr_t, beta1, beta2, eps, step))
        else:
            check(lib.mg_dense_adam_step(executor, arena.ptr, lr_t, beta1, beta2, eps, step))
        check(lib.mg_adam_read(arena.ptr, cm, cv))
        states.append((arena.read_data(0, n), list(cm), list(cv)))
    return states


def adam_both_ways(grads, m, v, params, step, num_steps):
    """(C results, Python results): parameters and both moments after one step."""
    lr_t = learning_rate(LEARNING_RATE, step, num_steps)
    c_result = c_adam_steps(params, grads, m, v, lr_t, BETA1, BETA2, EPS, [step])[0]

    py = PythonGraph()
    for p in params:
        py.param(p)
    py.finish_params()
    for value, g in zip(py.params, grads):
        value.grad = g
    py.set_adam_state(m, v)
    py.adam_step(step, num_steps)
    return c_result, (py.param_data(), *py.adam_state())


def test_adam_matches_python_on_random_and_near_midpoint_numbers():
    rng = random.Random(7)
    step, num_steps = 3, 10
    grads = [rng.gauss(0, 1) * 10 ** rng.uniform(-30, 30) for _ in range(20000)]
    grads += squares_near_midpoints(rng, 4000) + [0.0] * 2000
    moments_v = [abs(rng.gauss(0, 1)) * 10 ** rng.uniform(-40, 10) for _ in range(len(grads))]
    # gradient 0 with chosen v: v_hat is what roots_near_midpoints aimed for
    roots = roots_near_midpoints(rng, 4000, step)
    grads += [0.0] * len(roots)
    moments_v += roots
    n = len(grads)
    moments_m = [rng.gauss(0, 1e-3) for _ in range(n)]
    params = [rng.gauss(0, 0.08) for _ in range(n)]

    # the inputs do reach the numbers where pow() and the fast answer part: without its checks,
    # the fast path would get these wrong
    assert sum(g ** 2 != g * g for g in grads) > 0
    v_hats = [(BETA2 * v + (1 - BETA2) * g ** 2) / (1 - BETA2 ** (step + 1)) for g, v in zip(grads, moments_v)]
    assert sum(x ** 0.5 != math.sqrt(x) for x in v_hats) > 0

    c_result, py_result = adam_both_ways(grads, moments_m, moments_v, params, step, num_steps)
    for name, c, p in zip(("params", "m", "v"), c_result, py_result):
        differ = [i for i in range(n) if c[i] != p[i]]
        assert not differ, f"{name} differs at {len(differ)} of {n}, first at {differ[:5]}"


def test_adam_lanes_give_python_bits_at_the_shortcuts_range_edges():
    """The vector path decides g**2 and v_hat**0.5 itself for results in [2^-900, 2^1000), with a
    wider tolerance in [2^-64, 2^64) (pymath.h's): lanes on both sides of each edge, mixed four to
    a group with ordinary ones and zeros."""
    rng = random.Random(7)
    grads, m, v = [], [], []
    for e in (-33, -32, -31, 31, 32, 33, -451, -450, -449, -700, 499, 500, 501):
        for x in (2.0 ** e, rng.uniform(1, 2) * 2.0 ** e, -rng.uniform(1, 2) * 2.0 ** (e - 1), 0.0, 1e-3):
            grads.append(x)
            m.append(rng.uniform(-1, 1) * 1e-3)
            v.append(rng.choice([0.0, 2.0 ** (2 * e), rng.uniform(1, 2) * 2.0 ** (2 * e + 1), 1e-6]))
    params = [rng.uniform(-1, 1) for _ in grads]
    c, p = adam_both_ways(grads, m, v, params, 3, 10)
    assert [list(map(repr, x)) for x in c] == [list(map(repr, x)) for x in p]


def test_squares_and_roots_outside_the_shortcuts_range_go_to_pow():
    """Outside [2^-900, 2^1000), and at powers of two, neither the vector path's test nor its
    check of pow()'s two possible answers may decide g**2 or v_hat**0.5: gradients there whose
    g**2 is not g*g (squares below 2^-900 and at 2^1000 and above), second moments whose
    v_hat**0.5 is not sqrt(v_hat) (roots below 2^-450, and roots that round to a power of two),
    each beside ordinary lanes in its four. eps is tiny so that the root decides p."""
    rng = random.Random(11)
    step, lr_t, eps = 3, 0.01, 2.0 ** -1020
    b2 = 1 - BETA2 ** (step + 1)

    def v_hat_of(v):
        return (BETA2 * v + (1 - BETA2) * 0.0 ** 2) / b2

    def squares(lo, hi, n):
        out = []
        while len(out) < n:
            g = rng.choice((-1, 1)) * rng.uniform(1, 2) * 2.0 ** rng.randint(lo, hi)
            if g ** 2 != g * g:
                out.append(g)
        return out

    tiny_roots, power_roots = [], []
    while len(tiny_roots) < 40:
        v = rng.uniform(1, 2) * 2.0 ** rng.randint(-1000, -905)
        if v_hat_of(v) ** 0.5 != math.sqrt(v_hat_of(v)):
            tiny_roots.append(v)
    for j in range(-300, 300, 3):
        v = 4.0 ** j * b2 / BETA2
        for _ in range(12):
            v = math.nextafter(v, math.inf)
            x = v_hat_of(v)
            if math.frexp(math.sqrt(x))[0] == 0.5 and x ** 0.5 != math.sqrt(x):
                power_roots.append(v)
                break
    assert len(power_roots) > 20
    grads, m, v = [], [], []
    for g in squares(-520, -452, 40) + squares(500, 510, 40):
        grads.append(g), m.append(0.0), v.append(0.0)
    for vi in tiny_roots + power_roots:
        grads.append(0.0), m.append(rng.uniform(-1, 1) * math.sqrt(vi)), v.append(vi)
    for k in range(len(grads) - 1, -1, -1):     # ordinary lanes between them
        if k % 3 == 0:
            grads.insert(k, rng.gauss(0, 1e-2)), m.insert(k, rng.gauss(0, 1e-3)), v.insert(k, rng.uniform(0, 1e-4))
    params = [rng.gauss(0, 0.08) for _ in grads]
    c = c_adam_steps(params, grads, m, v, lr_t, BETA1, BETA2, eps, [step])[0]
    py = seed_adam(params, grads, m, v, lr_t, BETA1, BETA2, eps, step)
    assert bits(c) == bits(py)


@pytest.mark.parametrize("g", [float("nan"), float("inf"), -float("inf"), 5e-324, 1e-170])
def test_adam_edge_gradients_give_python_bits(g):
    """inf ** 2 is inf in Python and the update makes nan; tiny squares underflow: same bits."""
    c, p = adam_both_ways([g], [0.0], [0.0], [0.5], 0, 10)
    assert [list(map(repr, x)) for x in c] == [list(map(repr, x)) for x in p]


@pytest.mark.parametrize("g", [float("nan"), float("inf"), -float("inf"), 5e-324, -5e-324, 1e-170, -1e-170])
def test_adam_edge_gradients_in_a_vector_give_python_bits(g):
    """The same gradients in each lane of the eight the vector path takes at once (eight lanes,
    or two fours: each then goes to pow() as a lane the shortcut left), beside near-midpoint
    squares of both signs."""
    near = squares_near_midpoints(random.Random(3), 7)
    params = [0.5 * (-0.5) ** k for k in range(8)]
    for lane in range(8):
        grads = near[:lane] + [g] + near[lane:]
        c, p = adam_both_ways(grads, [0.0] * 8, [0.0] * 8, params, 0, 10)
        assert [list(map(repr, x)) for x in c] == [list(map(repr, x)) for x in p]


def seed_adam(params, grads, m, v, lr_t, beta1, beta2, eps, step):
    """The seed's update in Python floats, with any constants: (params, m, v) after one step."""
    out = ([], [], [])
    for p, g, mi, vi in zip(params, grads, m, v):
        mi = beta1 * mi + (1 - beta1) * g
        vi = beta2 * vi + (1 - beta2) * g ** 2
        m_hat = mi / (1 - beta1 ** (step + 1))
        v_hat = vi / (1 - beta2 ** (step + 1))
        for x, value in zip(out, (p - lr_t * m_hat / (v_hat ** 0.5 + eps), mi, vi)):
            x.append(value)
    return out


def bits(state):
    return [[struct.pack("<d", x) for x in xs] for xs in state]


@pytest.mark.parametrize("beta1,threads", [(BETA1, None), (0.75, None), (0.5, None), (0.999, None), (BETA1, 3)])
def test_idle_parameters_with_subnormal_first_moments_give_python_bits(beta1, threads):
    """A parameter with no gradient keeps a first moment that decays into the subnormals; the
    vector path writes such lanes without their slow arithmetic (adam.c's idle lanes): their m
    in integers, p kept where that is proved. Every kind of lane, mixed in fours with ordinary
    ones: m subnormal (the least, the largest, at rounding ties of beta1 * m for beta1 0.75 and
    0.5) or +-0, g +0 or -0, v 0 or tiny or large, p ordinary or too small to be kept; also with
    the step split over 3 threads."""
    rng = random.Random(5)
    tiny = 2.0 ** -1074
    ms = [tiny, -tiny, 2 * tiny, 3 * tiny, 6 * tiny, (2 ** 52 - 1) * tiny, -(2 ** 52 - 1) * tiny, 0.0, -0.0]
    ms += [rng.choice((-1, 1)) * rng.randrange(1, 2 ** 52) * tiny for _ in range(200)]
    ms += [rng.choice((-1, 1)) * (2 * rng.randrange(1, 2 ** 20) + 1) * 2 * tiny for _ in range(50)]   # ties
    grads, m, v, params = [], [], [], []
    for mi in ms:
        for g in (0.0, -0.0):
            grads.append(g)
            m.append(mi)
            v.append(rng.choice((0.0, 1e-300, rng.uniform(0, 1e-6), 3.0)))
            params.append(rng.choice((rng.gauss(0, 0.08), 1e-300, -5e-310, 0.0, 1.0)))
        grads.append(rng.gauss(0, 1e-2))                 # an ordinary lane in the same four
        m.append(rng.gauss(0, 1e-3))
        v.append(rng.uniform(0, 1e-4))
        params.append(rng.gauss(0, 0.08))
    assert any(m_ != 0.0 and abs(m_) < 2.0 ** -1022 for m_ in m)
    lr_t, step = 0.01, 64                                # a step that looks for idle lanes
    c = c_adam_steps(params, grads, m, v, lr_t, beta1, BETA2, EPS, [step], threads)[0]
    py = seed_adam(params, grads, m, v, lr_t, beta1, BETA2, EPS, step)
    assert bits(c) == bits(py)


def test_first_moments_decaying_into_the_subnormals_give_python_bits():
    """Parameters whose gradient stops: over 400 steps their first moments go from ~1e-306 into
    the subnormals (the vector path looks for idle lanes every 64 steps) and down to 1, 2 or 3
    times the least one, where beta1 * m rounds back to m. Every step's bits are the seed's."""
    rng = random.Random(9)
    n = 64
    params = [rng.gauss(0, 0.08) for _ in range(n)]
    m = [rng.choice((-1, 1)) * rng.uniform(1, 9) * 10.0 ** rng.randint(-307, -306) for _ in range(n)]
    v = [rng.uniform(0, 1e-6) for _ in range(n)]
    grads = [0.0 if i % 3 else rng.gauss(0, 1e-3) for i in range(n)]
    steps = list(range(400))
    states = c_adam_steps(params, grads, m, v, 0.01, BETA1, BETA2, EPS, steps)
    state = (params, m, v)
    for step, c in zip(steps, states):
        state = seed_adam(*state[:1], grads, *state[1:], 0.01, BETA1, BETA2, EPS, step)
        assert bits(c) == bits(state), f"step {step}"
    assert sum(x != 0.0 and abs(x) < 2.0 ** -1022 for x in state[1]) > n // 2
    assert all(abs(x) <= 3 * 5e-324 for x, g in zip(state[1], grads) if g == 0.0)


def test_adam_overflow_raises_as_python():
    with pytest.raises(OverflowError):
        1e200 ** 2
    with pytest.raises(OverflowError):
        adam_both_ways([0.1, 1e200], [0.0, 0.0], [0.0, 0.0], [0.5, 0.5], 0, 10)


@pytest.mark.parametrize("threads", [None, 1, 2, 3])
def test_a_failed_adam_step_changes_nothing(threads):
    """A step that cannot write in place (a gradient whose square overflows, at the end: in the
    last part of the scan when it is split over threads) fails before committing: the
    parameters, moments and gradients are what they were."""
    from microgpt.native import Arena, check, ffi, lib, owned
    n = 99
    arena = Arena()
    first = arena.leaves([0.1 * i for i in range(n)])
    arena.keep()
    check(lib.mg_adam_init(arena.ptr, n))
    grads = [0.01 * i for i in range(n - 1)] + [1e200]
    for i, g in enumerate(grads):
        check(lib.mg_set_grad(arena.ptr, first + i, g))
    before = (arena.read_data(0, n), arena.read_grad(0, n))
    with pytest.raises(OverflowError):
        if threads is None:
            check(lib.mg_adam_step(arena.ptr, 0.01, BETA1, BETA2, EPS, 0))
        else:
            executor = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")
            assert lib.mg_dense_set_threads(executor, threads, 1, 8) == threads
            check(lib.mg_dense_adam_step(executor, arena.ptr, 0.01, BETA1, BETA2, EPS, 0))
    m, v = ffi.new("double[]", n), ffi.new("double[]", n)
    check(lib.mg_adam_read(arena.ptr, m, v))
    assert (arena.read_data(0, n), arena.read_grad(0, n)) == before
    assert list(m) == [0.0] * n and list(v) == [0.0] * n


@pytest.mark.parametrize("threads", [None, 1, 2, 3])
def test_a_negative_second_moment_fails_the_step_and_changes_nothing(threads):
    """A second moment below 0 (mg_adam_write can put one there) makes v_hat**0.5 complex
    at its parameter, in the middle of the step: the step fails there and leaves every
    parameter, moment and gradient as it was, before and after a step that succeeds. The step
    does not scan the moments for it: the write notes it."""
    from microgpt.native import Arena, check, ffi, lib, owned
    n = 99
    arena = Arena()
    first = arena.leaves([0.1 * i for i in range(n)])
    arena.keep()
    check(lib.mg_adam_init(arena.ptr, n))
    executor = None
    if threads is not None:
        executor = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")
        assert lib.mg_dense_set_threads(executor, threads, 1, 8) == threads

    def step(k):
        for i in range(n):
            check(lib.mg_set_grad(arena.ptr, first + i, 0.001 * (i + 1)))
        if executor is None:
            return lib.mg_adam_step(arena.ptr, 0.01, BETA1, BETA2, EPS, k)
        return lib.mg_dense_adam_step(executor, arena.ptr, 0.01, BETA1, BETA2, EPS, k)

    def state():
        m, v = ffi.new("double[]", n), ffi.new("double[]", n)
        check(lib.mg_adam_read(arena.ptr, m, v))
        return arena.read_data(0, n), arena.read_grad(0, n), list(m), list(v)

    check(step(0))
    m, v = ffi.new("double[]", n), ffi.new("double[]", n)
    check(lib.mg_adam_read(arena.ptr, m, v))
    v[50] = -1.0
    check(lib.mg_adam_write(arena.ptr, m, v))
    for k in (1, 2):                        # the second try finds the same moment
        for i in range(n):
            check(lib.mg_set_grad(arena.ptr, first + i, 0.001 * (i + 1)))
        before = state()
        with pytest.raises(ValueError, match="complex"):
            check(step(k))
        assert state() == before
    v[50] = 0.5                             # written right again: the step succeeds
    check(lib.mg_adam_write(arena.ptr, m, v))
    check(step(1))
    assert arena.read_grad(0, n) == [0.0] * n


def test_a_step_that_leaves_a_negative_second_moment_is_noted():
    """beta2 above 1 makes c2 negative, and a step can succeed with v < 0 (its b2 < 0 keeps
    v_hat > 0): the next step, with the usual beta2, must not write in place. It fails at the
    first parameter whose v_hat is negative (the first 50 get gradients large enough to keep
    theirs positive), and changes nothing."""
    from microgpt.native import Arena, check, ffi, lib
    n = 99
    arena = Arena()
    first = arena.leaves([0.1 * i for i in range(n)])
    arena.keep()
    check(lib.mg_adam_init(arena.ptr, n))

    def set_grads(grads):
        for i, g in enumerate(grads):
            check(lib.mg_set_grad(arena.ptr, first + i, g))

    set_grads([0.001 * (i + 1) for i in range(n)])
    check(lib.mg_adam_step(arena.ptr, 0.01, BETA1, 1.5, EPS, 0))
    m, v = ffi.new("double[]", n), ffi.new("double[]", n)
    check(lib.mg_adam_read(arena.ptr, m, v))
    assert all(x < 0 for x in v)
    set_grads([1.0] * 50 + [0.001 * (i + 1) for i in range(50, n)])
    before = (arena.read_data(0, n), arena.read_grad(0, n), list(m), list(v))
    with pytest.raises(ValueError, match="complex"):
        check(lib.mg_adam_step(arena.ptr, 0.01, BETA1, BETA2, EPS, 1))
    check(lib.mg_adam_read(arena.ptr, m, v))
    assert (arena.read_data(0, n), arena.read_grad(0, n), list(m), list(v)) == before


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_the_same_bits(threads):
    """A step split over threads (each a run of parameters) gives every bit of one thread's, and
    of Python's, on the numbers where the shortcut and pow() part."""
    from microgpt.native import Arena, check, lib, owned
    rng = random.Random(11)
    grads = [rng.gauss(0, 1) * 10 ** rng.uniform(-20, 20) for _ in range(3000)] + squares_near_midpoints(rng, 400)
    n = len(grads)
    params = [rng.gauss(0, 0.08) for _ in range(n)]
    py = PythonGraph()
    for p in params:
        py.param(p)
    py.finish_params()
    arena = Arena()
    first = arena.leaves(params)
    arena.keep()
    check(lib.mg_adam_init(arena.ptr, n))
    executor = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")  # lends Adam its threads
    assert lib.mg_dense_set_threads(executor, threads, 1, 8) == threads  # 8 parameters a thread at least
    for step in range(3):
        for i, g in enumerate(grads):
            check(lib.mg_set_grad(arena.ptr, first + i, g * (step + 1)))
        for value, g in zip(py.params, grads):
            value.grad = g * (step + 1)
        check(lib.mg_dense_adam_step(executor, arena.ptr, learning_rate(LEARNING_RATE, step, 10), BETA1, BETA2,
                                     EPS, step))
        py.adam_step(step, 10)
        assert arena.read_data(0, n) == py.param_data()
        assert arena.read_grad(0, n) == [0.0] * n


def test_bad_thread_counts_are_refused():
    from microgpt.native import lib, owned
    executor = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")
    for threads, work, share in ((0, 1, 1), (65, 1, 1), (2, 0, 1), (2, 1, 0), (2, 1, -1)):
        assert lib.mg_dense_set_threads(executor, threads, work, share) == lib.MG_ERR_ARG
