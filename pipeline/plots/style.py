"""Look and output of every plot: palette, per-covariance-type styles, figures, saving.

Figures are built on a :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`
and never through ``pyplot``: pyplot keeps global state (the current figure,
the backend) that is not safe to share between threads, and the flows render
plots from worker threads.  Global ``rcParams`` are never modified; styling
is passed explicitly.

Colours come from the Okabe-Ito palette (distinguishable with the common
forms of colour-vision deficiency); where colour carries meaning a second cue
(marker shape or line style) carries it too.  Each covariance type gets a
fixed colour and marker, in the order of :data:`gmm_engine.COVARIANCE_TYPES`,
so the same type looks the same in every report.

A plot is rendered to PNG bytes in memory and published with
:func:`gmm_engine.atomic.write_bytes` (temporary sibling, fsync, rename): a
reader (or a Prefect artifact upload) never sees a half-written image, and a
failed render leaves the previous file and no debris behind.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gmm_engine import COVARIANCE_TYPES, atomic

logger = logging.getLogger(__name__)

# Okabe & Ito (2008), "Color Universal Design"; black is kept out of the
# categorical cycle because it is reserved for anomalies and annotations.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
)
BLACK = "#000000"
GREY = "#8C8C8C"

#: the second cue beside colour, one per palette entry
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

#: covariance type -> (colour, marker), in the registry's order
TYPE_STYLE = {
    name: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)])
    for i, name in enumerate(COVARIANCE_TYPES)
}

FIGSIZE = (8.0, 5.0)
FIGSIZE_TWO_PANELS = (8.0, 7.0)
DPI = 110


def new_figure(figsize=FIGSIZE) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def category_colours(n: int) -> list:
    """``n`` distinguishable colour-blind-safe colours."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    from matplotlib import colormaps

    # Beyond 7 categories no qualitative palette stays distinguishable;
    # viridis at least stays ordered and readable for every form of CVD.
    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.95, n)]


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG and publish it atomically at ``path``.

    Parameters
    ----------
    fig : Figure
        Cleared afterwards, whether rendering succeeds or not.
    path : Path
        Checked destination (see :func:`pipeline.plots.checks.check_path`);
        parent directories are created, an existing file is replaced.

    Returns
    -------
    Path
        ``path`` as given.
    """
    buffer = io.BytesIO()
    try:
        # The canvas's own PNG writer draws the figure once, running its layout engine in
        # that draw; savefig would first draw it a second time to lay it out (about half of
        # a report plot's rendering).  The figure's dpi is DPI already.
        fig.canvas.print_png(buffer)
    finally:
        # Drops the renderer and artists now rather than at the next GC cycle.
        fig.clear()
    atomic.write_bytes(path, buffer.getvalue())
    logger.debug("wrote plot %s", path)
    return path
