"""Prefect events of the stream, for a team's automations to act on.

* ``gmm.drift.detected`` -- a scored partition drifted (a per-partition test
  or the sequential detector); resource ``gmm.partition.<id>``, related
  resource ``gmm.model.<version>`` (role ``model``), payload: which tests
  fired, their p-values, the sequential statistic.
* ``gmm.model.updated`` -- an update registered a candidate; resource
  ``gmm.model.<candidate>``, related ``gmm.model.<parent>`` (role
  ``parent``); payload: promoted or not and why, the partitions absorbed,
  whether the drift remains unexplained.
* ``gmm.model.update_refused`` -- an update was refused (it would collapse a
  component); resource ``gmm.model.<parent>``.

Inside a flow run Prefect adds the run as a related resource.  An
automation can match, for example, ``{"prefect.resource.id": "gmm.partition.*"}``
on ``gmm.drift.detected``.
"""

from __future__ import annotations

DRIFT = "gmm.drift.detected"
UPDATED = "gmm.model.updated"
REFUSED = "gmm.model.update_refused"


def _model(version: str, role: str) -> dict:
    return {"prefect.resource.id": f"gmm.model.{version}", "prefect.resource.role": role}


def drift_detected(partition_id: str, model_version: str, drift: dict):
    """Emit ``gmm.drift.detected`` for one partition; the Event (None where events are off)."""
    from prefect.events import emit_event

    tests = {name: drift[name]["p_adjusted"] for name in ("anomaly_rate", "loglik_ks", "occupancy_g") if name in drift}
    seq = drift.get("sequential") or {}
    return emit_event(
        event=DRIFT,
        resource={"prefect.resource.id": f"gmm.partition.{partition_id}", "gmm.partition": partition_id},
        related=[_model(model_version, "model")],
        payload={"partition": partition_id, "model_version": model_version, "reasons": drift.get("reasons", []),
                 "p_adjusted": tests, "sequential_statistic": seq.get("statistic")},
    )


def model_updated(outcome: dict):
    """Emit ``gmm.model.updated`` (a candidate was registered) or ``gmm.model.update_refused``."""
    from prefect.events import emit_event

    payload = {k: outcome[k] for k in ("parent", "version", "promoted", "reason", "partitions", "n_rows",
                                       "held_back", "unexplained", "recommendation")}
    if outcome["version"] is None:
        return emit_event(event=REFUSED, resource={"prefect.resource.id": f"gmm.model.{outcome['parent']}"},
                          payload=payload)
    return emit_event(event=UPDATED, resource={"prefect.resource.id": f"gmm.model.{outcome['version']}"},
                      related=[_model(outcome["parent"], "parent")], payload=payload)
