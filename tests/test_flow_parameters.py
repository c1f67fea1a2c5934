"""The flows record their parameters as Prefect would, without importing FastAPI for it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.encoders import jsonable_encoder

from flows.config import DemoConfig, FitConfig, IngestConfig, ScoreConfig, SelectConfig
from flows.demo_flow import demo_flow
from flows.fit_flow import fit_flow
from flows.flow_parameters import Flow
from flows.ingest_flow import ingest_flow
from flows.initialize_flow import initialize_flow
from flows.score_flow import score_partitions_flow
from flows.select_flow import select_model_flow

FLOWS = [demo_flow, fit_flow, ingest_flow, initialize_flow, score_partitions_flow, select_model_flow]


def _configs(tmp_path):
    return [
        FitConfig(workdir=str(tmp_path), model={"n_components": 3, "covariance_type": "diag", "tol": 1e-4}),
        IngestConfig(workdir=str(tmp_path), source=str(tmp_path / "x.csv")),
        ScoreConfig(workdir=str(tmp_path)),
        SelectConfig(workdir=str(tmp_path)),
        DemoConfig(workdir=str(tmp_path)),
    ]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_flow_records_its_parameters_as_prefect_does(flow, tmp_path):
    assert isinstance(flow, Flow)
    for config in _configs(tmp_path):
        params = {"config": config, "resume": True, "init_dir": None, "report_to": tmp_path / "r", "progress": False,
                  "count": 3, "ratio": 0.5, "name": "x"}
        ours = flow.serialize_parameters(params)
        assert ours == {k: jsonable_encoder(v) for k, v in params.items()}
        assert ours["config"]["workdir"] == str(tmp_path) and ours["report_to"] == str(tmp_path / "r")


def test_other_values_are_left_to_prefect(tmp_path):
    # a value this module does not encode: Prefect's own method encodes the whole dict
    params = {"config": FitConfig(workdir=str(tmp_path)), "rows": np.arange(3), "when": {"a": [1, 2]}}
    assert fit_flow.serialize_parameters(params) == {
        "config": jsonable_encoder(params["config"]), "rows": "<ndarray>", "when": {"a": [1, 2]}}


def test_a_flow_run_does_not_import_fastapi(tmp_path):
    """Prefect imported FastAPI (~0.3 s) in every command's flow run to record its parameters; not any more."""
    code = (
        "import sys\n"
        "from flows.config import FitConfig\n"
        "from flows.fit_flow import fit_flow\n"
        f"p = fit_flow.serialize_parameters({{'config': FitConfig(workdir={str(tmp_path)!r}), 'resume': False}})\n"
        "assert p['resume'] is False and p['config']['model']['n_components']\n"
        "print('fastapi' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
