"""The seed's GPT in PyTorch, float64, on the CPU: an outside reference for the speed benchmarks
(benchmarks/test_sizes.py), written as a PyTorch user would (a document's positions at once under a
causal mask, torch.optim.Adam with the seed's settings and decay). Same model, same initial
parameters (the seed's random.gauss draws), not the same bits: its sums run in other orders."""
import random

import torch

from microgpt.model import parameter_shapes
from microgpt.optim import BETA1, BETA2, EPS, LEARNING_RATE, learning_rate


def rmsnorm(x):
    return x * (x.pow(2).mean(-1, keepdim=True) + 1e-5) ** -0.5


class TorchGPT:
    def __init__(self, config, std=0.08):
        self.config = config
        self.params = {name: torch.tensor([[random.gauss(0, std) for _ in range(cols)] for _ in range(rows)],
                                          dtype=torch.float64, requires_grad=True)
                       for name, (rows, cols) in parameter_shapes(config).items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=EPS)

    def loss(self, tokens):
        c, p = self.config, self.params
        n = min(c.block_size, len(tokens) - 1)
        ids, targets = torch.tensor(tokens[:n]), torch.tensor(tokens[1:n + 1])
        x = rmsnorm(p['wte'][ids] + p['wpe'][:n])
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        for i in range(c.n_layer):
            residual = x
            h = rmsnorm(x)
            q, k, v = (h @ p[f'layer{i}.attn_w{w}'].T for w in "qkv")
            q, k, v = (t.view(n, c.n_head, c.head_dim).transpose(0, 1) for t in (q, k, v))
            att = (q @ k.transpose(1, 2)) / c.head_dim ** 0.5
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            x = (att @ v).transpose(0, 1).reshape(n, c.n_embd) @ p[f'layer{i}.attn_wo'].T + residual
            residual = x
            x = torch.relu(rmsnorm(x) @ p[f'layer{i}.mlp_fc1'].T) @ p[f'layer{i}.mlp_fc2'].T + residual
        return torch.nn.functional.cross_entropy(x @ p['lm_head'].T, targets)

    def train_step(self, tokens, step, num_steps):
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(LEARNING_RATE, step, num_steps)
        loss = self.loss(tokens)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()
