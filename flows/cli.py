"""``gmm``: the command line of gmm-stream.

Every command takes ``--config FILE`` (YAML; see ``configs/``) and a few
overrides; ``--help`` on each explains them.  Prefect is imported only
after its home and logging are configured, so a command that fails on
its config fails fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .config import (
    ConfigError,
    DemoConfig,
    FitConfig,
    IngestConfig,
    ScoreConfig,
    SelectConfig,
    ServeConfig,
    load_config,
)
from . import preflight
from .runtime import configure

app = typer.Typer(
    name="gmm",
    help="Gaussian mixture modelling at cluster scale: ingest, fit, select, score, serve, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).", exists=False)
WorkdirOpt = typer.Option(None, "--workdir", "-w", help="Work directory (overrides the config).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Debug logging.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Progress bars.")


def _load(model, config: Optional[Path], overrides: dict):
    try:
        return load_config(model, config, overrides)
    except ConfigError as exc:  # an expected error like any other: one line, exit code 1
        _fail(exc)


def _fail(exc: BaseException) -> None:
    typer.echo(f"Error: {exc}", err=True)
    raise typer.Exit(1) from None


#: set by the console entry point: commands may run as forks of the work directory's warm runner
_DELEGATE = False


def _start(cfg, check, verbose: bool, *, keep_server: bool = True, delegate: bool = True) -> None:
    """Preflight checks (no Prefect, no Dask), then the Prefect set-up of the work directory.

    From the console, when the work directory's kept server has its warm
    runner ready (:mod:`flows.warm_runner`), the command runs as a fork of
    it instead (checks and set-up included, with everything already
    imported) and exits with its code; a runner still importing is not
    waited for, except by ``gmm server start``; a command that starts the
    server (and the runner beside it) runs as its first fork if the runner
    is up as soon as the server.
    """
    if _DELEGATE and delegate and keep_server:
        # a runner still importing is not waited for: it imports at a lower priority than this command
        _run_as_fork(cfg)
    try:
        check(cfg)
    except Exception as exc:  # an expected error: one line, before anything starts
        _fail(exc)
    try:
        started = configure(cfg.workdir, verbose=verbose, keep_server=keep_server)
    except Exception as exc:  # the kept Prefect server did not start: its log is named
        _fail(exc)
    if started:
        typer.echo(started, err=True)
    if _DELEGATE and delegate and keep_server:
        # the runner launched beside a server that just came up, if it is up already: this command is its first fork
        _run_as_fork(cfg, configured=True)


def _run_as_fork(cfg, configured: bool = False) -> None:
    """Run this command as a fork of the work directory's warm runner and exit with its code, if it can serve."""
    from pipeline.workspace import Workspace

    from . import warm_runner

    code = warm_runner.delegate(Workspace(cfg.workdir).prefect_home, sys.argv[1:], configured=configured)
    if code is not None:
        raise typer.Exit(code)


def _run(flow, *args, **kwargs):
    """Run a flow from the command line; an exception becomes one line and exit code 1.

    A command waits for its flow, so the flow-run heartbeat (which lets a
    server mark runs of dead processes as crashed, and costs a second at the
    end of every run) is off here; served runs keep it.

    The objects alive before the run (Prefect's and the command's modules;
    ~340,000 at the end of a `gmm fit`) are moved out of the garbage
    collector's sight before the flow and again after it: each full
    collection would walk them all, and the interpreter's collection at exit
    alone cost ~1 s per command here.
    They live until the process ends anyway; what the run frees is still
    collected.
    """
    import gc

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    gc.freeze()
    try:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return flow(*args, **kwargs)
    except Exception as exc:  # the flow run already logged the traceback
        _fail(exc)
    finally:
        gc.freeze()


def _cli_path(value: Optional[str], *, only_if_exists: bool = False) -> Optional[str]:
    """A path given on the command line, taken relative to the current directory.

    Paths inside a config file are taken inside its ``workdir``; a path typed
    on the command line means what the shell means by it.  URLs pass as they are.
    """
    if value is None or "://" in value:
        return value
    path = Path(value).expanduser()
    if only_if_exists and not path.exists():
        return value  # e.g. 'current' or a registered version name
    return str(path.resolve())


def _fmt(x):
    return f"{x:.4f}" if isinstance(x, float) and math.isfinite(x) else str(x)


@app.command()
def ingest(
    config: Optional[Path] = ConfigOpt,
    source: Optional[str] = typer.Option(None, help="CSV, Parquet, .npy or Zarr (path or URL)."),
    dest: Optional[str] = typer.Option(None, help="Zarr array to write (default <workdir>/data/train.zarr)."),
    bad_rows: Optional[str] = typer.Option(
        None, help="'error' (default), 'drop' rows with NaN/inf, or 'marginalize' (keep NaN as missing values)."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="Replace dest."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
    progress: bool = ProgressOpt,
):
    """Validate a table or array and write it as a chunked, compressed Zarr array."""
    cfg = _load(IngestConfig, config, {"source": _cli_path(source), "dest": _cli_path(dest), "bad_rows": bad_rows,
                                        "overwrite": overwrite, "workdir": workdir and str(workdir)})
    _start(cfg, preflight.ingest, verbose)
    from .ingest_flow import ingest_flow

    out = _run(ingest_flow, cfg, progress=progress)
    r = out["report"]
    typer.echo(f"Wrote {out['path']}: {r['n_rows_written']:,} rows x {len(r['feature_names'])} features "
               f"({r['dtype']}); {r['n_bad_rows']:,} bad rows ({r['bad_rows_policy']}).")
    if r.get("n_incomplete_rows"):
        typer.echo(f"Kept {r['n_incomplete_rows']:,} rows with missing values ({r['n_missing_values']:,} NaN "
                   "entries): fit them with model.missing: marginalize.")
    if r["non_numeric_columns"]:
        typer.echo(f"Non-numeric columns left out: {', '.join(r['non_numeric_columns'])}")


@app.command()
def fit(
    config: Optional[Path] = ConfigOpt,
    data: Optional[str] = typer.Option(None, help="Training Zarr array (overrides the config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of this run."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
    progress: bool = ProgressOpt,
):
    """Fit a mixture with checkpointed EM, calibrate the anomaly threshold, register it."""
    cfg = _load(FitConfig, config, {"data": _cli_path(data), "workdir": workdir and str(workdir)})
    _start(cfg, preflight.fit, verbose)
    from .fit_flow import fit_flow

    out = _run(fit_flow, cfg, resume=resume, progress=progress)
    typer.echo(
        f"Model {out['version']}: {out['n_iter']} iterations, converged={out['converged']}, "
        f"mean log-likelihood {_fmt(out['lower_bound'])}, threshold {_fmt(out['threshold']['threshold'])}"
        + (f" (resumed from iteration {out['resumed_from']})" if out["resumed_from"] else "")
    )
    typer.echo(f"Report: {out['report_dir']}")


@app.command()
def select(
    config: Optional[Path] = ConfigOpt,
    data: Optional[str] = typer.Option(None, help="Training Zarr array (overrides the config)."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
    method: Optional[str] = typer.Option(
        None, help="'grid' (default: candidates by the criterion) or 'variational' (one Dirichlet-process mixture)."),
    progress: bool = ProgressOpt,
):
    """Choose K and the covariance type: over a grid by BIC, AIC or held-out log-likelihood, or variationally."""
    cfg = _load(SelectConfig, config, {"data": _cli_path(data), "workdir": workdir and str(workdir),
                                        "method": method})
    _start(cfg, preflight.select, verbose)
    from .select_flow import select_model_flow

    out = _run(select_model_flow, cfg, progress=progress)
    typer.echo(Path(out["report"]["markdown"]).read_text())
    if out["registered"]:
        typer.echo(f"Registered model {out['registered']['version']} as current.")


@app.command()
def score(
    config: Optional[Path] = ConfigOpt,
    model: Optional[str] = typer.Option(None, help="'current', a version, or a model directory."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
    progress: bool = ProgressOpt,
):
    """Score every unscored partition under incoming/ and record it in the manifest."""
    cfg = _load(ScoreConfig, config, {"model": _cli_path(model, only_if_exists=True),
                                       "workdir": workdir and str(workdir)})
    _start(cfg, preflight.score, verbose)
    from .score_flow import score_partitions_flow

    out = _run(score_partitions_flow, cfg, progress=progress)
    scored = [r for r in out["results"] if r["status"] == "scored"]
    typer.echo(f"Model {out['model_version']}: scored {len(scored)} partitions "
               f"({len(out['already_scored'])} were already scored).")
    for r in scored:
        typer.echo(f"  {r['partition_id']}: {r['n_rows']:,} rows, {r['n_anomalies']:,} anomalies, "
                   f"mean log-likelihood {_fmt(r['mean_loglik'])}")
    for name, reason in out["rejected"]:
        typer.echo(f"  rejected {name}: {reason}", err=True)


@app.command()
def serve(
    config: Optional[Path] = ConfigOpt,
    interval: Optional[float] = typer.Option(None, help="Seconds between scheduled runs."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule instead of an interval."),
    port: Optional[int] = typer.Option(None, help="Port of the local Prefect server."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
):
    """Run score-partitions on a schedule (starts a local Prefect server unless PREFECT_API_URL is set)."""
    cfg = _load(ServeConfig, config, {"interval_seconds": interval, "cron": cron, "server_port": port,
                                       "score.workdir": workdir and str(workdir)})
    _start(cfg.score, preflight.score, verbose, keep_server=cfg.api_url is None, delegate=False)
    from .serve import serve as do_serve

    try:
        do_serve(cfg, cfg.score.workdir)
    except KeyboardInterrupt:
        typer.echo("Stopped.")
    except Exception as exc:
        _fail(exc)


@app.command()
def deploy(
    config: Optional[Path] = ConfigOpt,
    pool: str = typer.Option(..., "--pool", help="Work pool of the Prefect server (a process pool is created if missing)."),
    interval: Optional[float] = typer.Option(None, help="Seconds between scheduled runs."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule instead of an interval."),
    workdir: Optional[Path] = WorkdirOpt,
    verbose: bool = VerboseOpt,
):
    """Deploy score-partitions to a work pool of a Prefect server; its workers then run the schedule."""
    cfg = _load(ServeConfig, config, {"interval_seconds": interval, "cron": cron,
                                       "score.workdir": workdir and str(workdir)})
    _start(cfg.score, preflight.score, verbose, keep_server=cfg.api_url is None, delegate=False)
    if cfg.api_url:
        import os

        os.environ["PREFECT_API_URL"] = cfg.api_url
    from .deploy import deploy as do_deploy

    try:
        out = do_deploy(cfg, pool)
    except Exception as exc:
        _fail(exc)
    typer.echo(f"Deployed {out['name']} to the {out['pool_type']} work pool {out['pool']!r} on {out['api_url']} "
               f"({out['schedule']}). Start a worker: prefect worker start --pool {out['pool']}")


@app.command()
def demo(
    config: Optional[Path] = ConfigOpt,
    workdir: Optional[Path] = WorkdirOpt,
    rows: Optional[int] = typer.Option(None, help="Training rows to generate (default 2,000,000)."),
    partitions: Optional[int] = typer.Option(None, help="Incoming partitions to score (default 3)."),
    verbose: bool = VerboseOpt,
    progress: bool = ProgressOpt,
):
    """Generate data with known components and anomalies; select, fit and score it through the flows."""
    cfg = _load(DemoConfig, config, {"workdir": workdir and str(workdir), "n_rows": rows,
                                      "n_partitions": partitions})
    _start(cfg, preflight.demo, verbose)
    from .demo_flow import demo_flow

    s = _run(demo_flow, cfg, progress=progress)
    sel, truth, a = s["selected"], s["truth"], s["anomaly"]
    typer.echo("")
    typer.echo("gmm-stream demo")
    typer.echo(f"  data: {truth['n_rows']:,} rows, {truth['n_injected_anomalies']:,} injected anomalies; ingested "
               f"{s['ingest']['n_rows_written']:,} rows x {len(s['ingest']['feature_names'])} features into Zarr")
    typer.echo(f"  selected: K={sel['n_components']} {sel['covariance_type']}   "
               f"truth: K={truth['n_components']} {truth['covariance_type']}   "
               f"({'match' if s['selection_matches_truth'] else 'MISMATCH'})")
    if s.get("variational"):
        v = s["variational"]
        typer.echo(f"  variational: {v['n_components']} of {v['fitted_n_components']} components hold more than "
                   f"{v['weight_floor']:g} of the weight   ({'match' if v['matches_truth'] else 'MISMATCH'})")
    typer.echo("  BIC table (trimmed selection sample):")
    for row in sorted(s["selection_table"], key=lambda r: (r["covariance_type"], r["n_components"])):
        typer.echo(f"    K={row['n_components']:<2} {row['covariance_type']:<9} BIC {_fmt(row['bic']):>16}  "
                   f"held-out {_fmt(row['heldout_loglik'])}")
    typer.echo(f"  model {s['model']['version']}: {s['model']['n_iter']} EM iterations, "
               f"threshold {_fmt(s['model']['threshold'])}")
    typer.echo(f"  anomalies over {a['n_rows']:,} scored rows in {s['partitions_scored']} partitions: "
               f"precision {_fmt(a['precision'])}, recall {_fmt(a['recall'])}")
    _echo_stream(s)
    typer.echo(f"  timings (s): {json.dumps(s['timings_seconds'])}")
    typer.echo(f"  summary: {Path(cfg.workdir) / 'report' / 'summary.json'}")


models_app = typer.Typer(name="models", help="Registered model versions: lineage, roll back or forward.",
                         no_args_is_help=True)
app.add_typer(models_app)


@models_app.command("list")
def models_list(workdir: Optional[Path] = WorkdirOpt):
    """Every registered version: its parent, the partitions it absorbed, when and why it was made current."""
    from pipeline.registry import ModelRegistry
    from pipeline.reports import model_rows, text_table
    from pipeline.workspace import Workspace

    registry = ModelRegistry(Workspace(workdir or Path("gmm-work")).models)
    try:
        rows = model_rows(registry)
    except Exception as exc:
        _fail(exc)
    if not rows:
        _fail(ValueError(f"No model is registered under {registry.root}: run `gmm fit` or `gmm select` first."))
    typer.echo(text_table(rows))


@models_app.command("use")
def models_use(version: str = typer.Argument(..., help="A registered version (see `gmm models list`)."),
               workdir: Optional[Path] = WorkdirOpt):
    """Make VERSION the current model (roll back or forward); atomic, and recorded in the history."""
    from pipeline.registry import ModelRegistry
    from pipeline.workspace import Workspace

    registry = ModelRegistry(Workspace(workdir or Path("gmm-work")).models)
    previous = registry.current_version()
    try:
        registry.set_current(version, reason=f"set by `gmm models use` (was {previous})")
    except Exception as exc:
        _fail(exc)
    typer.echo(f"Current model: {version} (was {previous}).")


@app.command()
def status(
    workdir: Optional[Path] = WorkdirOpt,
    last: int = typer.Option(20, help="Partitions to print (the newest); the PNG shows all."),
    png: Optional[Path] = typer.Option(None, help="Where to write the plot (default <workdir>/report/status.png)."),
):
    """The stream at a glance: recent partitions in arrival order, their drift tests, the model that scored them."""
    from pipeline.manifest import Manifest
    from pipeline.plots import plot_stream
    from pipeline.registry import ModelRegistry
    from pipeline.reports import status_rows, text_table
    from pipeline.stream import history
    from pipeline.workspace import Workspace

    ws = Workspace(workdir or Path("gmm-work"))
    if not ws.manifest.exists():
        _fail(FileNotFoundError(f"No partitions have been scored in {ws.root} yet: run `gmm score` first."))
    try:
        points = history(Manifest(ws.manifest).entries())
        registry = ModelRegistry(ws.models)
        current = registry.current_version()
        reference = registry.drift_reference(current) if current else None
        expected = reference.expected_rate if reference is not None else None
        typer.echo(text_table(status_rows(points, last)) or "No partition has been scored yet.")
        if points:
            out = plot_stream(points, _cli_path(str(png)) if png else ws.report / "status.png", expected_rate=expected)
            typer.echo(f"Current model: {current}. Plot: {out}")
    except Exception as exc:
        _fail(exc)


server_app = typer.Typer(name="server", help="The Prefect server kept for a work directory.",
                         no_args_is_help=True)
app.add_typer(server_app)


def _home(workdir: Optional[Path]) -> Path:
    from pipeline.workspace import Workspace

    return Workspace(workdir or Path("gmm-work")).prefect_home


@server_app.command("start")
def server_start(workdir: Optional[Path] = WorkdirOpt):
    """Start the work directory's Prefect server (every gmm command there then reuses it)."""
    from . import kept_server

    from . import warm_runner

    try:
        server, started = kept_server.ensure(_home(workdir))
        # the runner imports with the environment the commands' own set-up gives them
        from .runtime import kept_server_env

        os.environ.update(kept_server_env(_home(workdir), server.api_url))
        warm_runner.ensure(_home(workdir), server.pid)
        # the commands that follow fork from the runner only once it has imported: wait for it here
        ready = warm_runner.wait_ready(_home(workdir), warm_runner.STARTUP_WAIT)
    except Exception as exc:
        _fail(exc)
    typer.echo(f"{'Started' if started else 'Already running'}: {server.api_url} (pid {server.pid})"
               f"{'' if ready else '; the warm runner is not up (commands run in their own process)'}.")


@server_app.command("stop")
def server_stop(workdir: Optional[Path] = WorkdirOpt):
    """Stop the work directory's Prefect server (its database stays; the next command starts it again)."""
    from . import kept_server

    server = kept_server.stop(_home(workdir))
    typer.echo(f"Stopped {server.api_url} (pid {server.pid})." if server else "No server was running.")


@server_app.command("status")
def server_status(workdir: Optional[Path] = WorkdirOpt):
    """Whether the work directory's Prefect server runs, and where; exit code 1 if not."""
    from . import kept_server

    server = kept_server.find(_home(workdir))
    if server is None:
        typer.echo(f"No Prefect server runs for {_home(workdir).parent}.")
        raise typer.Exit(1)
    typer.echo(f"Running: {server.api_url} (pid {server.pid}, since {server.started_at}).")


def _echo_stream(s: dict) -> None:
    """The demo's stream: per partition moved or not, drifted or not, the version that scored it."""
    d = s["drift"]
    typer.echo(f"  stream of {len(s['stream'])} partitions, one tick each: component moved from partition "
               f"{d['truth_at']}, drift detected at {d['detected_at']}, {d['false_alarms']} false alarms")
    for row in s["stream"]:
        truth = "moved " if row["moved"] else "steady"
        verdict = "DRIFT" if row["drifted"] else "ok   "
        typer.echo(f"    {row['index']:>3} {row['partition']:<10} {truth} {verdict} {','.join(row['why']):<40} "
                   f"model ...{(row['model_version'] or '')[-8:]}")
    for u in s["updates"]:
        typer.echo(f"  update from {', '.join(u['partitions'])}: {u['reason']}")
    b, a = s["before_update"], s["after_update"]
    typer.echo(f"  anomalies on moved partitions: before the update precision {_fmt(b['precision'])}, recall "
               f"{_fmt(b['recall'])}; after it precision {_fmt(a['precision'])}, recall {_fmt(a['recall'])}")


def main() -> None:  # pragma: no cover - console entry point
    global _DELEGATE
    _DELEGATE = True
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
