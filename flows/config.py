"""YAML configuration for every command, validated once with pydantic.

Each command has one model (``IngestConfig``, ``FitConfig``, ``SelectConfig``,
``ScoreConfig``, ``ServeConfig``, ``DemoConfig``); ``configs/`` holds an
example of each.  Unknown keys are errors (a typo must not be ignored),
and :func:`load_config` turns pydantic's errors into one message per
problem that names the field, what was given and what is allowed.
Relative paths in a config are resolved against its ``workdir``.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gmm_engine import COVARIANCE_TYPES
from pipeline.versions import is_version_name
from pipeline.workspace import Workspace

#: the covariance registry's names, in its order
CovarianceType = Literal[COVARIANCE_TYPES]
InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    """TLS for connections to a Dask scheduler (``tls://`` addresses)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    require_encryption: bool = True


class ClusterConfig(_Strict):
    """Where Dask work runs: the embedded LocalCluster or an existing scheduler."""

    address: str | None = Field(
        None, description="Scheduler address (tcp://host:8786, tls://...). Empty: start a LocalCluster."
    )
    n_workers: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Embedded cluster only; default: one worker per core."
    )
    threads_per_worker: Annotated[int, Field(ge=1)] = 1
    memory_limit: str = Field("auto", description="Per worker, e.g. '4GiB' or 'auto'.")
    dashboard_address: str = Field("127.0.0.1:0", description="Embedded cluster; port 0 picks a free one.")
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    tls: TLSConfig | None = None
    local_max_bytes: Annotated[int, Field(ge=0)] = Field(
        256 * 2**20, description="Embedded cluster only: data up to this size (in memory) is processed in the "
                                 "flow's own process with threads, without starting a LocalCluster; 0: always start one.")

    @model_validator(mode="after")
    def _tls_needs_address(self):
        if self.address and self.address.startswith("tls://"):
            missing = [k for k in ("ca_file", "cert_file", "key_file") if self.tls is None or getattr(self.tls, k) is None]
            if self.tls is None:
                raise ValueError("a tls:// scheduler address needs the 'tls' section (ca_file, cert_file, key_file)")
            if missing:
                raise ValueError(f"a tls:// scheduler address needs cluster.tls.{', cluster.tls.'.join(missing)} "
                                 "(paths of the CA certificate, the client certificate and its key)")
        return self

    def with_tls_in(self, workdir: Path) -> "ClusterConfig":
        """This config with relative TLS file paths taken inside ``workdir``."""
        if self.tls is None:
            return self
        files = {k: Path(workdir) / v for k in ("ca_file", "cert_file", "key_file")
                 if (v := getattr(self.tls, k)) is not None and not Path(v).is_absolute()}
        return self.model_copy(update={"tls": self.tls.model_copy(update=files)}) if files else self

    def tls_settings(self, workdir: Path):
        """The TLS files as :class:`pipeline.cluster.TLS` (relative paths inside ``workdir``), or None."""
        from pipeline.cluster import TLS

        tls = self.with_tls_in(workdir).tls
        if tls is None:
            return None
        return TLS(*(None if (v := getattr(tls, k)) is None else str(v)
                     for k in ("ca_file", "cert_file", "key_file")), tls.require_encryption)


class ModelConfig(_Strict):
    """``gmm_engine.GaussianMixture`` parameters (scikit-learn's names and defaults, but ``acceleration`` and ``init_size``)."""

    n_components: Annotated[int, Field(ge=1)] = 1
    covariance_type: CovarianceType = "full"
    tol: Annotated[float, Field(ge=0)] = 1e-3
    reg_covar: Annotated[float, Field(ge=0)] = 1e-6
    max_iter: Annotated[int, Field(ge=0)] = 100
    n_init: Annotated[int, Field(ge=1)] = 1
    init_params: InitParams = "kmeans"
    init_size: Annotated[int, Field(ge=1)] | None = Field(
        250_000, description="Find the start on a uniform sample of about this many rows, in memory (k-means and "
                             "EM there), drawn in the first pass: out of core it saves the passes k-means and the "
                             "first EM iterations make. null reads every row to initialise, as scikit-learn does.")
    random_state: Annotated[int, Field(ge=0, lt=2**32)] | None = 0
    acceleration: Literal["squarem"] | None = Field(
        "squarem", description="SQUAREM: the same converged fit in fewer passes over the data (max_iter then "
                               "counts passes); null for plain EM, as scikit-learn fits.")
    missing: Literal["error", "marginalize"] = Field(
        "error", description="marginalize: fit rows with NaN entries on their observed features (training data "
                             "ingested with bad_rows: marginalize); error refuses them.")

    def estimator_params(self) -> dict:
        return self.model_dump()


class SelectionModelConfig(ModelConfig):
    """The candidates' parameters in ``gmm select``: as :class:`ModelConfig`, but found on all rows by default.

    A start found on a sample runs each candidate's EM to convergence on
    the sample before the first shared pass, so dropping candidates that
    cannot win saves nothing (measured on covertype: ``gmm select`` took
    141 s with ``init_size`` 250,000 against 55 s without).
    """

    init_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="null: candidates initialise on the rows they are compared on, sharing every pass; an "
                          "int finds each candidate's start on a sample of that many rows first (see gmm fit).")


class AnomalyConfig(_Strict):
    """The anomaly threshold is this quantile of the training log-likelihood."""

    contamination: Annotated[float, Field(gt=0, lt=0.5)] = 0.01


class _WithWorkdir(_Strict):
    workdir: Path = Path("gmm-work")

    @property
    def workspace(self) -> Workspace:
        """The work directory's layout: every default location comes from it."""
        return Workspace(self.workdir)


class IngestConfig(_WithWorkdir):
    source: str = Field(..., description="CSV, Parquet, .npy or Zarr; path or fsspec URL.")
    dest: str | None = Field(None, description="Zarr array to write; default <workdir>/data/train.zarr")
    format: Literal["csv", "parquet", "npy", "zarr"] | None = None
    columns: list[str] | None = None
    feature_names: list[str] | None = None
    dtype: Literal["float32", "float64"] | None = None
    bad_rows: Literal["error", "drop", "marginalize"] = Field(
        "error", description="Rows with NaN/inf: error refuses them, drop drops and counts them, marginalize "
                             "keeps rows with NaN entries as missing values (fit them with model.missing: marginalize).")
    chunk_rows: Annotated[int, Field(ge=1)] | None = None
    compression: Literal["lz4", "zstd", "none"] = Field(
        "lz4", description="Codec of the stored chunks: lz4 decodes fastest (EM reads the array every iteration)."
    )
    overwrite: bool = False


class FitConfig(_WithWorkdir):
    data: str | None = Field(None, description="Training Zarr array (path or URL); default <workdir>/data/train.zarr.")
    cluster: ClusterConfig = ClusterConfig()
    model: ModelConfig = ModelConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    make_current: bool = Field(True, description="Make the fitted model the current one for scoring.")
    run_name: str | None = Field(None, description="Checkpoint folder name; default derived from the model.")


class GridConfig(_Strict):
    """The candidates of ``gmm select``: component counts and covariance types, and how the K range extends."""

    n_components: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        description="The initial K range, for every covariance type.")
    covariance_types: list[CovarianceType] = Field(default_factory=lambda: list(typing.get_args(CovarianceType)))
    max_n_components: Annotated[int, Field(ge=1)] = Field(
        16, description="The K range of the leading covariance type extends while the criterion still improves "
                        "near its largest K, up to this cap (a warning when the cap stops it); the grid's largest "
                        "n_components keeps the grid fixed.")
    patience: Annotated[int, Field(ge=1)] = Field(
        2, description="The range extends until this many K values above (and below) the best K have been tried.")

    @model_validator(mode="after")
    def _consistent(self):
        if not self.n_components or not self.covariance_types:
            raise ValueError("the grid needs at least one n_components and one covariance type")
        if max(self.n_components) > self.max_n_components:
            raise ValueError(f"max_n_components ({self.max_n_components}) is below the grid's largest n_components "
                             f"({max(self.n_components)}): raise max_n_components to at least "
                             f"{max(self.n_components)}, or leave K values above it out of the grid")
        return self


class VariationalConfig(_Strict):
    """``method: variational``: one Dirichlet-process mixture with a generous K (see ``pipeline.variational_selection``)."""

    n_components: Annotated[int, Field(ge=2)] = Field(
        12, description="Components of the variational mixture: more than the data can need.")
    covariance_type: CovarianceType = "full"
    weight_floor: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.01, description="A component counts as used when its weight (fraction of the data) exceeds this.")
    max_iter: Annotated[int, Field(ge=1)] = Field(500, description="Pruning is slow: allow at least 500.")
    sample_rows: Annotated[int, Field(ge=100)] = Field(
        20_000, description="Fitted on this many sampled rows first, then continued on all selection rows.")
    weight_concentration_prior_type: Literal["dirichlet_process", "dirichlet_distribution"] = "dirichlet_process"
    weight_concentration_prior: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Smaller values switch more components off; default 1 / n_components.")

    def settings(self):
        from pipeline.variational_selection import VariationalSettings

        return VariationalSettings(**self.model_dump())


class SelectConfig(_WithWorkdir):
    method: Literal["grid", "variational"] = Field(
        "grid", description="grid: candidates compared by the criterion; variational: one Dirichlet-process "
                            "mixture whose used components are the selection (the 'variational' section).")
    variational: VariationalConfig = VariationalConfig()
    data: str | None = Field(None, description="Training Zarr array (path or URL); default <workdir>/data/train.zarr.")
    cluster: ClusterConfig = ClusterConfig()
    grid: GridConfig = GridConfig()
    criterion: Literal["bic", "aic", "heldout"] = "bic"
    holdout_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    sample_rows: Annotated[int, Field(ge=100)] | None = Field(
        None, description="Fit the grid on about this many rows (whole chunks); default all."
    )
    trim: bool = Field(
        True, description="Compare candidates after removing the 'contamination' fraction of least likely rows."
    )
    model: SelectionModelConfig = SelectionModelConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    make_current: bool = Field(True, description="Register the winner (threshold on all data) as the current model.")
    drop_early: bool = Field(
        True, description="Stop fitting candidates that cannot win (BIC or AIC): even gaining their best recent "
                          "gain on every iteration left, they would end behind the leader.")
    local_max_bytes: Annotated[int, Field(ge=0)] = Field(
        256 * 2**20, description="Selection samples up to this many bytes are fitted in the flow's process on "
                                 "local threads (a Dask graph per pass costs more than their arithmetic); larger "
                                 "ones out of core on the cluster; 0 fits all on the cluster.")


class DriftConfig(_Strict):
    """When a scored partition counts as drifted (see ``pipeline.drift``)."""

    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.01, description="False-alarm rate per partition (Holm's correction over the three tests).")
    min_rate_ratio: Annotated[float, Field(ge=1)] = Field(
        1.5, description="Anomaly-rate effect: observed/expected (or its inverse) at least this.")
    min_ks: Annotated[float, Field(ge=0, le=1)] = Field(0.02, description="Log-likelihood effect: KS distance.")
    min_tv: Annotated[float, Field(ge=0, le=1)] = Field(0.02, description="Occupancy effect: total variation.")
    cusum_k: Annotated[float, Field(ge=0)] = Field(0.5, description="CUSUM allowance (standard errors).")
    cusum_h: Annotated[float, Field(gt=0)] = Field(5.0, description="CUSUM decision interval (standard errors).")

    def policy(self):
        from pipeline.drift import DriftPolicy

        return DriftPolicy(**self.model_dump())


class UpdateConfig(_Strict):
    """When the model learns from the partitions it scored (see ``pipeline.updates``)."""

    mode: Literal["never", "on_drift", "always"] = Field(
        "never", description="never (the model stays as fitted), on_drift, or always.")
    half_life: Annotated[float, Field(gt=0)] = Field(
        1_000_000.0, description="Rows after which old data (the model's and older partitions') weighs half.")
    min_rows: Annotated[int, Field(ge=1)] = Field(1_000, description="Rows an update must absorb, at least.")
    contamination: Annotated[float, Field(gt=0, lt=0.5)] | None = Field(
        None, description="Of the updated model's threshold; default the current model's.")
    min_gain: Annotated[float, Field(ge=0)] = Field(
        0.01, description="Nats per row the updated model must gain on the held-back partition to be promoted.")

    def policy(self):
        from pipeline.updates import UpdatePolicy

        return UpdatePolicy(**self.model_dump())


class ScoreConfig(_WithWorkdir):
    incoming: str | None = Field(None, description="Directory or fsspec URL where partitions arrive; default <workdir>/incoming.")
    outputs: str | None = Field(None, description="Directory of per-partition score stores; default <workdir>/scores.")
    manifest: str | None = Field(None, description="SQLite manifest of scored partitions; default <workdir>/manifest.sqlite.")
    model: str = Field("current", description="'current', a registered version, or a model directory.")
    cluster: ClusterConfig = ClusterConfig()
    bad_rows: Literal["error", "drop", "marginalize"] = Field(
        "error", description="Rows with NaN/inf: error fails the partition, drop drops and counts them, marginalize "
                             "scores rows with NaN entries on their observed features (a GaussianMixture model).")
    max_parallel: Annotated[int, Field(ge=1)] = 4
    local_max_rows: Annotated[int, Field(ge=0)] = Field(
        1_048_576, description="Partitions of at most this many rows are scored in the flow's process "
                               "(a Dask graph costs more than their arithmetic); 0 scores all on Dask.")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    drift: DriftConfig = DriftConfig()
    update: UpdateConfig = UpdateConfig()

    def model_spec(self) -> str:
        """``model`` as the registry takes it: 'current', a version, or a directory (relative: in ``workdir``)."""
        if self.model == "current" or is_version_name(self.model):
            return self.model
        return self.workspace.resolve(self.model, Path("current"))


class ServeConfig(_Strict):
    score: ScoreConfig
    interval_seconds: Annotated[float, Field(gt=0)] | None = None
    cron: str | None = None
    deployment_name: str = "score-partitions"
    api_url: str | None = Field(None, description="Prefect API; default $PREFECT_API_URL or a local server.")
    server_host: str = "127.0.0.1"
    server_port: Annotated[int, Field(ge=1, le=65535)] = 4200

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # Prefect's own check (its vendored croniter), here rather than minutes later when the server has started
        from .prefect_compat import validate_cron_string

        try:
            return validate_cron_string(v)
        except ValueError as exc:
            raise ValueError(f"{exc}; a cron schedule has five fields: minute hour day-of-month month "
                             "day-of-week, for example '*/5 * * * *' (every five minutes)") from None

    @model_validator(mode="after")
    def _one_schedule(self):
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("set exactly one of 'interval_seconds' or 'cron'")
        return self


class DemoConfig(_WithWorkdir):
    workdir: Path = Path("demo-work")
    n_rows: Annotated[int, Field(ge=1000)] = 2_000_000
    n_features: Annotated[int, Field(ge=2)] = 6
    true_components: Annotated[int, Field(ge=1)] = 4
    true_covariance_type: CovarianceType = "full"
    anomaly_fraction: Annotated[float, Field(gt=0, lt=0.2)] = 0.005
    n_partitions: Annotated[int, Field(ge=1)] = Field(12, description="Partitions arriving one scheduled tick at a time.")
    partition_rows: Annotated[int, Field(ge=100)] = 50_000
    drift_at: Annotated[int, Field(ge=1)] | None = Field(
        7, description="From this partition on (1-based) one component has moved; null: a stream without drift.")
    drift_shift: Annotated[float, Field(gt=0)] = Field(3.0, description="How far it moves, in its standard deviations.")
    update: UpdateConfig = UpdateConfig(mode="on_drift", half_life=10_000, min_rows=1_000)
    grid: GridConfig = GridConfig(n_components=[2, 3, 4, 5, 6])
    select_sample_rows: Annotated[int, Field(ge=1000)] = 200_000
    variational: VariationalConfig | None = Field(
        VariationalConfig(), description="Also select variationally (one Dirichlet-process mixture) and compare its "
                                         "used components with the truth; null: skip it.")
    max_iter: Annotated[int, Field(ge=1)] = 100
    seed: Annotated[int, Field(ge=0)] = 0
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _drift_in_the_stream(self):
        if self.drift_at is not None and self.drift_at > self.n_partitions:
            raise ValueError(f"drift_at={self.drift_at} is past the last of the {self.n_partitions} partitions: set "
                             "drift_at to at most n_partitions, or to null for a stream without drift")
        return self


# ---------------------------------------------------------------------------
# loading with readable errors


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'did you mean'."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        annotation = fields[part].annotation
        current = next(
            (a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}) or {})


def _describe(model: type[BaseModel], err: dict) -> str:
    loc = tuple(err.get("loc", ()))
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind = err.get("type", "")
    given = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown field.{hint} Allowed fields here: {', '.join(allowed)}."
    if kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        return f"{where}: got {given!r}; allowed values: {expected}."
    if kind == "missing":
        return (f"{where}: required field is missing; set it in the YAML file given with --config "
                "(configs/ has an example of each command's file).")
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "value_error" and isinstance(given, dict):
        return f"{where}: {msg}."  # a section-level check; the section itself says nothing more
    return f"{where}: {msg} (got {given!r})."


def parse_config(model: type[BaseModel], data: dict | None, source: str = "config"):
    """Validate a mapping against ``model``; raise ConfigError listing each problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level, got {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(model, e) for e in exc.errors()]
        if len(lines) == 1:  # the usual case, a typo: one line for the terminal
            raise ConfigError(f"{source} is not a valid {model.__name__}: {lines[0]}") from None
        raise ConfigError(
            f"{source} is not a valid {model.__name__}:\n  - " + "\n  - ".join(lines)
        ) from None


def load_config(model: type[BaseModel], path: str | Path | None, overrides: dict | None = None):
    """Read a YAML file (or nothing) plus CLI overrides into a validated model.

    Parameters
    ----------
    model : pydantic model class
    path : str or Path or None
        YAML file; None means defaults plus ``overrides``.
    overrides : dict, optional
        Dotted keys (``"model.n_components"``) set after reading the file.
    """
    data: dict = {}
    source = "command-line options"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; see configs/ for examples.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level.")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_config(model, data, source)
