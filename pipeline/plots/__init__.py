"""PNG plots for a run's report folder: model selection, EM convergence, anomaly
scores and a 2-D view of the fitted mixture.

=============  ===========================================================
module         responsibility
=============  ===========================================================
style          palette, per-covariance-type styles, figures, atomic saving
checks         argument validation shared by the plots
selection      :func:`plot_selection`: a criterion against K per type
trace          :func:`plot_loglik_trace`: EM convergence
histogram      :func:`plot_score_histogram`: scores and the threshold
projection     :func:`plot_projection` and its geometry
               (:func:`ellipse_geometry`, :func:`projection_axes`)
stream         :func:`plot_stream`: scored partitions in arrival order
weights        :func:`plot_weights`: a variational mixture's weights
=============  ===========================================================

Every ``plot_*`` function checks its arguments before drawing (a rejected
call writes nothing), builds its own figure without ``pyplot`` (the flows
render from worker threads), and publishes the PNG atomically through
:mod:`gmm_engine.atomic`.  Covariance types, their order and their styles
come from :data:`gmm_engine.COVARIANCE_TYPES`; any type's ``covariances_``
is expanded by :func:`gmm_engine.full_covariances`.
"""

from gmm_engine import COVARIANCE_TYPES

from .histogram import plot_score_histogram
from .projection import ellipse_geometry, plot_projection, projection_axes
from .selection import plot_selection
from .stream import plot_stream
from .trace import plot_loglik_trace
from .weights import plot_weights

__all__ = [
    "COVARIANCE_TYPES",
    "ellipse_geometry",
    "plot_loglik_trace",
    "plot_projection",
    "plot_score_histogram",
    "plot_selection",
    "plot_stream",
    "plot_weights",
    "projection_axes",
]
