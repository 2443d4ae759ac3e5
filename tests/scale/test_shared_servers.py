"""MLflow and Prefect on PostgreSQL with authentication: strangers are refused, pipelines with credentials
complete (in-process, served deployment, two at once) and no credential lands in MLflow."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_unauthenticated_clients_are_refused(shared_servers_up, monkeypatch):
    import asyncio

    import httpx
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    s = shared_servers_up
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException, match="401|not authenticated|Unauthorized"):
        MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", s.mlflow_user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-" + s.mlflow_password)
    with pytest.raises(MlflowException, match="401|not authenticated|Unauthorized"):
        MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", s.mlflow_password)
    assert MlflowClient(tracking_uri=s.mlflow_uri).search_experiments()  # the right password gets in

    async def read_flows(auth):
        with temporary_settings(updates={PREFECT_API_URL: s.prefect_api, PREFECT_API_AUTH_STRING: auth}):
            async with get_client() as client:
                return await client.read_flows()

    for auth in (None, "antgo:wrong"):
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            asyncio.run(read_flows(auth))
    assert isinstance(asyncio.run(read_flows(s.prefect_auth)), list)
