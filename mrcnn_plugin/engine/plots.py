"""The loss and learning-rate curves of a training run, as a PNG, from its metrics.json.

    plot_training_curves("output/metrics.json", "output/curves.png")

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, no display needed).
"""
import os
from typing import Dict, List, Optional

from .metrics import read_metrics

__all__ = ["plot_training_curves"]


def _training_records(metrics_path: str) -> List[Dict[str, float]]:
    """Records with losses, one per iteration (the last one written wins: a resumed run
    rewrites the iterations after its checkpoint), sorted by iteration."""
    by_iteration: Dict[int, Dict[str, float]] = {}
    for record in read_metrics(metrics_path):
        if "total_loss" in record and "iteration" in record:
            by_iteration[int(record["iteration"])] = record
    return [by_iteration[i] for i in sorted(by_iteration)]


def plot_training_curves(metrics_path: str, out_path: str, title: Optional[str] = None) -> Optional[str]:
    """Writes the losses (each term and total_loss) and the lr against iteration to `out_path`.

    Returns out_path, or None when metrics_path has no training records (nothing drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = _training_records(metrics_path)
    if not records:
        return None
    iterations = [r["iteration"] for r in records]
    loss_names = sorted({k for r in records for k in r if k.startswith("loss_")}) + ["total_loss"]

    fig = Figure(figsize=(9, 6), dpi=100, constrained_layout=True)
    FigureCanvasAgg(fig)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name in loss_names:
        points = [(i, r[name]) for i, r in zip(iterations, records) if name in r]
        loss_ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name,
                     linewidth=2.0 if name == "total_loss" else 1.0)
    loss_ax.set_ylabel("loss (median over the log period)")
    loss_ax.legend(fontsize="small", ncol=2)
    loss_ax.grid(alpha=0.3)
    if title:
        loss_ax.set_title(title)
    lr_points = [(i, r["lr"]) for i, r in zip(iterations, records) if "lr" in r]
    lr_ax.plot([p[0] for p in lr_points], [p[1] for p in lr_points], marker=".", color="black")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("iteration")
    lr_ax.grid(alpha=0.3)

    # Written beside the target and renamed, so a reader never sees half a PNG.
    tmp = f"{out_path}.tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path
