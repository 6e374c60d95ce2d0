"""The seed's GPT: token and position embeddings, rmsnorm, multi-head attention with a KV cache,
a ReLU MLP, no biases. Written once against a graph (graphs.py), which supplies the layers."""
import random
from array import array
from dataclasses import asdict, dataclass


class ConfigError(ValueError):
    """A model configuration that cannot be built."""


@dataclass(frozen=True)
class Config:
    vocab_size: int
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be at least 2 (one character and BOS), got {self.vocab_size}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def num_params(self):
        return sum(rows * cols for rows, cols in parameter_shapes(self).values())


def parameter_shapes(config):
    """state_dict names and (rows, cols) in the seed's order: this order decides the random draws."""
    c = config
    shapes = {'wte': (c.vocab_size, c.n_embd), 'wpe': (c.block_size, c.n_embd), 'lm_head': (c.vocab_size, c.n_embd)}
    for i in range(c.n_layer):
        shapes[f'layer{i}.attn_wq'] = (c.n_embd, c.n_embd)
        shapes[f'layer{i}.attn_wk'] = (c.n_embd, c.n_embd)
        shapes[f'layer{i}.attn_wv'] = (c.n_embd, c.n_embd)
        shapes[f'layer{i}.attn_wo'] = (c.n_embd, c.n_embd)
        shapes[f'layer{i}.mlp_fc1'] = (4 * c.n_embd, c.n_embd)
        shapes[f'layer{i}.mlp_fc2'] = (c.n_embd, 4 * c.n_embd)
    return shapes


class GPT:
    """The seed's model over a graph (graphs.py): its parameters, forward and loss."""

    def __init__(self, config, graph, std=0.08, rng=random):
        self.config, self.graph = config, graph
        # one rng.gauss per parameter (the seed's random.gauss), state_dict order, row by row,
        # exactly as the seed; drawn straight into an array of doubles (a list of float objects
        # leaves 4 MB behind at d128)
        self.state_dict = {}
        for name, (nout, nin) in parameter_shapes(config).items():
            values = array('d', (rng.gauss(0, std) for _ in range(nout * nin)))
            self.state_dict[name] = graph.layers.matrix(values, nout, nin)
        self.num_params = config.num_params
        graph.finish_params()

    def forward(self, token_id, pos_id, keys, values):
        """Logits for the next token; appends this position's keys and values to the cache."""
        g, sd, cfg = self.graph.layers, self.state_dict, self.config
        x = g.embed(sd['wte'], sd['wpe'], token_id, pos_id)  # token embedding + position embedding
        x = g.rmsnorm(x)
        for li in range(cfg.n_layer):
            x_residual = x
            x = g.rmsnorm(x)
            q = g.linear(x, sd[f'layer{li}.attn_wq'])
            k = g.linear(x, sd[f'layer{li}.attn_wk'])
            v = g.linear(x, sd[f'layer{li}.attn_wv'])
            keys[li].append(k)
            values[li].append(v)
            x = g.attention(q, keys[li], values[li], cfg.n_head)
            x = g.linear(x, sd[f'layer{li}.attn_wo'])
            x = g.add(x, x_residual)
            x_residual = x
            x = g.rmsnorm(x)
            x = g.linear(x, sd[f'layer{li}.mlp_fc1'])
            x = g.relu(x)
            x = g.linear(x, sd[f'layer{li}.mlp_fc2'])
            x = g.add(x, x_residual)
        return g.linear(x, sd['lm_head'])

    def empty_cache(self):
        return [[] for _ in range(self.config.n_layer)], [[] for _ in range(self.config.n_layer)]

    def loss(self, tokens):
        """Mean cross-entropy of predicting tokens[1:], cut to block_size as the seed does."""
        n = min(self.config.block_size, len(tokens) - 1)
        if n < 1:
            raise ValueError("a document needs at least one token besides BOS")
        keys, values = self.empty_cache()
        losses = []
        for pos_id in range(n):
            logits = self.forward(tokens[pos_id], pos_id, keys, values)
            losses.append(self.graph.layers.cross_entropy(logits, tokens[pos_id + 1]))
        return self.graph.layers.mean(losses)
