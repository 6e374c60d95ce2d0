"""`microgpt plot METRICS.jsonl OUT.png`: the loss curve of a run, drawn with matplotlib.

matplotlib is optional (`pip install ".[plot]"`): require_matplotlib() is called before any
work that would end in a plot, so a missing matplotlib is one line at once, not after a long run."""
import json
import math

from . import atomic, limits


class PlotError(ValueError):
    """No matplotlib, or a metrics file that cannot be plotted: one line."""


def require_matplotlib(flag):
    """The pyplot module (with a file-only backend), or PlotError naming the flag that needs it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(f"{flag} needs matplotlib, which is not installed: pip install matplotlib "
                        f"(or this package's [plot] extra)") from None
    return plt


def _finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond a float's range
        return False


def read_losses(path):
    """(steps, losses) from a --metrics file's step records."""
    steps, losses = [], []
    try:
        limits.regular_file_size(path, "metrics file")  # not a device: /dev/zero is one endless line
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    raise PlotError(f"{path} line {number} is not JSON: is it a --metrics file?") from None
                if not isinstance(record, dict):
                    raise PlotError(f"{path} line {number} is not a JSON object: is it a --metrics file?")
                if "step" in record:
                    step, loss = record.get("step"), record.get("loss")
                    if type(step) is not int or type(loss) not in (int, float) or not _finite(loss):
                        raise PlotError(f"{path} line {number}: step and loss must be numbers (the loss finite)")
                    steps.append(step)
                    losses.append(loss)
    except UnicodeDecodeError:
        raise PlotError(f"{path} is not UTF-8 text: is it a --metrics file?") from None
    except OSError:
        raise
    except ValueError as e:  # a folder, a device
        raise PlotError(str(e)) from None
    if not steps:
        raise PlotError(f"{path} has no step records (lines with \"step\" and \"loss\")")
    return steps, losses


def plot_losses(metrics_path, out_path):
    plt = require_matplotlib("microgpt plot")
    steps, losses = read_losses(metrics_path)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, losses, linewidth=0.6, alpha=0.5, label="loss per step")
    window = max(1, len(losses) // 50)
    if window > 1:  # a running mean shows the trend through the per-document noise
        prefix = [0.0]
        for loss in losses:
            prefix.append(prefix[-1] + loss)
        means = [(prefix[i + 1] - prefix[max(0, i + 1 - window)]) / min(window, i + 1) for i in range(len(losses))]
        ax.plot(steps, means, linewidth=1.5, label=f"mean of the last {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy)")
    ax.set_title(f"microgpt: training loss ({metrics_path})")
    ax.legend()
    fig.tight_layout()
    with atomic.AtomicFile(out_path, "wb") as f:
        fig.savefig(f.file, format="png", dpi=120)
    plt.close(fig)
    return len(steps)
