"""Figures logged with runs (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import warnings

from matplotlib import font_manager

CJK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC")
# Chinese label names render with the first CJK font the machine has (matplotlib falls back
# per glyph); without one they show as boxes, which is no reason to flood the log.
_installed = {font.name for font in font_manager.fontManager.ttflist}
matplotlib.rcParams["font.family"] = ["DejaVu Sans", *(f for f in CJK_FONTS if f in _installed)]
warnings.filterwarnings("ignore", message="Glyph .* missing from font")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def confusion_matrix_figure(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]
) -> Figure:
    """Confusion matrix with counts, gold labels on rows."""
    fig, ax = plt.subplots(figsize=(1.2 * len(label_names) + 3, 1.2 * len(label_names) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(label_names))),
        display_labels=list(label_names),
        ax=ax,
        colorbar=False,
    )
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    plt.close(fig)
    return fig
