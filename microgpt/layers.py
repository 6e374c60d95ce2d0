"""The seed's layers, written over scalar Values: the python backend's kernels.

Each function is the seed's expression, so it builds the seed's graph node for node. They work
with any Value class (the python backend's, or the c backend's op-by-op handles), which is how
the c backend is checked against this file. A vector is a list of Values; a matrix a list of rows.
"""
from .engine import dot


def add(x, y):
    return [a + b for a, b in zip(x, y)]


def embed(wte, wpe, token_id, pos_id):
    return [t + p for t, p in zip(wte[token_id], wpe[pos_id])]


def scale(x, c):
    return [xi * c for xi in x]


def relu(x):
    return [xi.relu() for xi in x]


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def linear_fused(x, w):
    """linear() with each row one dot node: the same bits, far fewer nodes (engine.dot)."""
    return [dot(wo, x) for wo in w]


def softmax(logits):
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x, sum_of_squares=lambda x: sum(xi * xi for xi in x)):
    ms = sum_of_squares(x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def rmsnorm_fused(x):
    """rmsnorm() with its sum of squares one dot node (engine.dot): each x_i gets the same two
    terms, x_i * grad, as through the chain's x_i * x_i node, so the bits are the same."""
    return rmsnorm(x, sum_of_squares=lambda x: dot(x, x))


def attention_head(q_h, k_h, v_h):
    """One head over the KV cache: k_h and v_h hold this head's slice of every past position."""
    head_dim = len(q_h)
    attn_logits = [sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim**0.5 for t in range(len(k_h))]
    attn_weights = softmax(attn_logits)
    return [sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)]


def attention_head_fused(q_h, k_h, v_h):
    """attention_head() with each logit's sum and each output's sum one dot node (engine.dot):
    the same bits, far fewer nodes (at d128, a 16-position step's graph shrinks by more than half)."""
    head_dim = len(q_h)
    attn_logits = [dot(q_h, k_h[t]) / head_dim**0.5 for t in range(len(k_h))]
    attn_weights = softmax(attn_logits)
    return [dot(attn_weights, [v_h[t][j] for t in range(len(v_h))]) for j in range(head_dim)]


def attention(q, keys, values, n_head, head=attention_head):
    head_dim = len(q) // n_head
    x_attn = []
    for h in range(n_head):
        hs = h * head_dim
        k_h = [ki[hs:hs + head_dim] for ki in keys]
        v_h = [vi[hs:hs + head_dim] for vi in values]
        x_attn.extend(head(q[hs:hs + head_dim], k_h, v_h))
    return x_attn


def attention_fused(q, keys, values, n_head):
    return attention(q, keys, values, n_head, head=attention_head_fused)


def cross_entropy(logits, target):
    probs = softmax(logits)
    return -probs[target].log()


def cross_entropy_fused(logits, target):
    """cross_entropy() making only the target's probability: its siblings cannot reach the loss,
    so the backward never sees them and every bit is the same (as the c kernel does)."""
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return -(exps[target] / total).log()


def mean(losses):
    return (1 / len(losses)) * sum(losses)
