"""Sampling names from a model: the seed's loop (temperature, random.choices), fed at each
position by the model's next-token distribution, from the model's forward on its graph or, on the
c backend's dense graph, from a compiled plan's forward one position at a time. Same draws, same
names: the numbers are the seed's either way.
"""
import random

from .training import gc_paused


def sample(model, tokenizer, temperature, prefix="", rng=random):
    """One name: from BOS (then the prefix's letters, forced) until BOS or block_size tokens; its
    draws from rng (the seed's: the random module)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    graph, cfg = model.graph, model.config
    forced = tokenizer.encode(prefix)
    if len(forced) >= cfg.block_size:
        raise ValueError(f"prefix {prefix!r} leaves no room: block_size is {cfg.block_size}")
    with graph.lock, gc_paused():
        next_probs = _next_probs(model, temperature ** -1)  # the seed's l / temperature is l * temperature**-1
        token_id, out = tokenizer.bos, []
        for pos_id in range(cfg.block_size):
            if pos_id < len(forced):
                next_probs(token_id, pos_id, want=False)
                token_id = forced[pos_id]
            else:
                probs = next_probs(token_id, pos_id)
                token_id = rng.choices(range(cfg.vocab_size), weights=probs)[0]
                if token_id == tokenizer.bos:
                    break
            out.append(token_id)
        del next_probs  # its cache's nodes go while the lock is held (c Values free into the arena)
    return tokenizer.decode(out)


def _next_probs(model, scale):
    dense = getattr(model.graph, "dense", None)
    found = dense.sampling_plan() if dense else None
    if found is None:
        return GraphProbs(model, scale)
    return DenseProbs(model, scale, *found)


class GraphProbs:
    """softmax(logits * scale) at each position, from the model's forward on its graph (the KV cache
    is the graph's nodes)."""

    def __init__(self, model, scale):
        self.model, self.scale = model, scale
        self.layers = model.graph.layers
        model.graph.begin_step()
        self.keys, self.values = model.empty_cache()

    def __call__(self, token_id, pos_id, want=True):
        """The distribution after token_id at pos_id (positions come in order from 0); None unless want."""
        logits = self.model.forward(token_id, pos_id, self.keys, self.values)
        if want:
            return self.layers.data(self.layers.softmax(self.layers.scale(logits, self.scale)))
        return None


class DenseProbs:
    """The same distributions from a dense plan's forward, one position at a time (the KV cache is
    the plan's flat buffers). A plan has as many positions as the longest document it was compiled
    for; a name that grows past them goes on on the graph, whose cache is first rebuilt from the
    tokens fed so far (a forward makes no random draw, so the draws are the same)."""

    def __init__(self, model, scale, plan, positions):
        self.model, self.scale = model, scale
        self.dense, self.plan, self.positions = model.graph.dense, plan, positions
        self.fed = []
        self.graph_probs = None

    def __call__(self, token_id, pos_id, want=True):
        if pos_id < self.positions:
            self.fed.append(token_id)
            vocab_size = self.model.config.vocab_size if want else 0
            return self.dense.sample_probs(self.plan, pos_id, token_id, self.scale, vocab_size)
        if self.graph_probs is None:
            self.graph_probs = GraphProbs(self.model, self.scale)
            for pos, token in enumerate(self.fed):
                self.graph_probs(token, pos, want=False)
        return self.graph_probs(token_id, pos_id, want)
