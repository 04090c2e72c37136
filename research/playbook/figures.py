"""What every claim's figure shares: a title with the verdict, seed bands, one save.

Each figure is titled ``<number>. <title>: <VERDICT>`` (green, red or grey) so a person scrolling
the figures sees the answer first, then the evidence. Curves over seeds are drawn as the mean
with a band from the lowest to the highest seed (:func:`seed_band`).
"""
from __future__ import annotations

import os
import textwrap
from typing import Any, Sequence

import numpy as np

from research.playbook import core
from research.train import distributed

VERDICT_COLORS = {core.REPRODUCED: "tab:green", core.NOT_REPRODUCED: "tab:red",
                  core.INCONCLUSIVE: "tab:gray"}
DPI = 100


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 4.0), **kwargs):
  """``(fig, axes)``: a grid of ``nrows x ncols`` panels of ``size`` inches each (Agg backend)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                           squeeze=False, **kwargs)
  return fig, axes


def seed_band(ax, x: Sequence[float], ys: Any, label: str | None = None, color: Any = None,
              **kwargs) -> None:
  """The mean over seeds (rows of ``ys``) as a line, and the seeds' min..max as a band (NaN-aware:
  a seed that stopped early leaves the band where it ends)."""
  ys = np.atleast_2d(np.asarray(ys, np.float64))
  x = np.asarray(x, np.float64)[:ys.shape[1]]
  with np.errstate(all="ignore"):
    count = np.sum(np.isfinite(ys), axis=0)
    finite = np.where(np.isfinite(ys), ys, np.nan)
    mean = np.where(count > 0, np.nanmean(np.where(count > 0, finite, 0.0), axis=0), np.nan)
    low = np.where(count > 0, np.nanmin(np.where(count > 0, finite, 0.0), axis=0), np.nan)
    high = np.where(count > 0, np.nanmax(np.where(count > 0, finite, 0.0), axis=0), np.nan)
  (line,) = ax.plot(x, mean, label=label, color=color, **kwargs)
  if ys.shape[0] > 1:
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def bands(ax, x: Sequence[float], curves: Any, labels: Sequence[str], colors: Sequence[Any],
          **kwargs) -> None:
  """:func:`seed_band` of every variant of ``curves`` ``(seeds, variants, len(x))``, with its
  label and colour."""
  curves = np.asarray(curves, np.float64)
  for j, (label, color) in enumerate(zip(labels, colors)):
    seed_band(ax, x, curves[:, j], label=label, color=color, **kwargs)


def finish(fig, context: core.Context, conditions: Sequence) -> str:
  """Titles ``fig`` with the claim (``context.number``, ``context.title``) and its verdict, saves
  it to ``context.figure``, closes it."""
  import matplotlib.pyplot as plt
  verdict = core.combine([c.verdict for c in conditions])
  # ~10 bold 12-point characters per inch: a narrow figure wraps its title instead of cutting it.
  # The verdict's words stay together (a no-break space).
  text = textwrap.fill(f"{context.number}. {context.title}: {verdict.replace(' ', chr(0xA0))}",
                       int(fig.get_size_inches()[0] * 10))
  fig.suptitle(text, color=VERDICT_COLORS[verdict], fontsize=12, fontweight="bold")
  fig.tight_layout(rect=(0, 0, 1, 0.95 - 0.03 * text.count("\n")))
  if distributed.is_main():   # several processes drew the same figure: process 0 saves it
    os.makedirs(os.path.dirname(context.figure), exist_ok=True)
    fig.savefig(context.figure, dpi=DPI)
  plt.close(fig)
  return context.figure


def note(ax, lines: Sequence[str], loc: str = "upper right") -> None:
  """A small text box with the deciding numbers inside a panel."""
  from matplotlib.offsetbox import AnchoredText
  box = AnchoredText("\n".join(lines), loc=loc, prop={"size": 8}, frameon=True)
  box.patch.set_alpha(0.8)
  ax.add_artist(box)
