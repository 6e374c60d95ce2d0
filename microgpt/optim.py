"""The seed's optimizer settings and its learning-rate schedule: the one home of both, for the
python Adam (graphs.py), the c Adam (which receives the decayed rate), the CLI and checkpoints."""

LEARNING_RATE, BETA1, BETA2, EPS = 0.01, 0.85, 0.99, 1e-8


def learning_rate(lr, step, num_steps):
    """The seed's linear decay: lr at step 0, down to 0 at num_steps."""
    return lr * (1 - step / num_steps)
