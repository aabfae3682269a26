"""The controller's Kubernetes API calls, as plain REST through the client's ApiClient.

The client's generated API classes (v37) are pydantic-validated and import every
model they mention when first touched: CoreV1Api alone costs 22 MB of RSS, AppsV1Api
12 MB, in a controller that otherwise idles near 55 MB. The controller makes a dozen
calls and reads a handful of fields, so it sends them itself: each method below is
one request, its HTTP method and path in the open (tests/chart/rbac_derive.py turns
them into the Role), authenticated and TLS-verified by the same ApiClient and
kubeconfig, answering decoded JSON. Errors raise the client's ApiException.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

PODS = "/api/v1/namespaces/{namespace}/pods"
POD = "/api/v1/namespaces/{namespace}/pods/{name}"
POD_PROXY = "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
DEPLOYMENT = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
DEPLOYMENT_SCALE = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
HPAS = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
EVENTS = "/api/v1/namespaces/{namespace}/events"
EVENT = "/api/v1/namespaces/{namespace}/events/{name}"
SECRET = "/api/v1/namespaces/{namespace}/secrets/{name}"
WORKERPOOLS = "/apis/qscale.io/v1alpha1/namespaces/{namespace}/workerpools"
ALL_WORKERPOOLS = "/apis/qscale.io/v1alpha1/workerpools"
WORKERPOOL_STATUS = "/apis/qscale.io/v1alpha1/namespaces/{namespace}/workerpools/{name}/status"
VERSION = "/version/"

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class KubeApi:
    """One method per API call the controller makes (the only place requests are built)."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client  # kubernetes.client.ApiClient: auth, TLS, connection pool

    def request(self, method: str, path: str, params: Mapping[str, str], *,
                query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str | None = None, timeout: float = 5.0,
                stream: bool = False, headers: Mapping[str, str] | None = None) -> Any:
        """Send one request; the decoded JSON body, or (stream) the raw urllib3 response.
        A status outside 2xx raises ApiException, as the generated client does."""
        header_params = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            header_params["Content-Type"] = content_type or "application/json"
        request = self.api.param_serialize(
            method=method, resource_path=path, path_params=dict(params),
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=header_params, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=timeout)
        if not 200 <= int(response.status) <= 299:
            response.read()
            raise ApiException(http_resp=response)
        if stream:
            return response.response
        raw = response.read()
        return json.loads(raw) if raw else {}

    def _query(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Watch parameters as kubernetes.watch.Watch passes them, to query parameters."""
        names = {"watch": "watch", "resource_version": "resourceVersion",
                 "timeout_seconds": "timeoutSeconds", "field_selector": "fieldSelector",
                 "label_selector": "labelSelector", "allow_watch_bookmarks": None}
        query = {}
        for key, value in kwargs.items():
            if names.get(key) and value is not None:
                query[str(names[key])] = str(value).lower() if isinstance(value, bool) else value
        return query

    # -- pods --

    def list_pods(self, namespace: str, label_selector: str) -> dict[str, Any]:
        return dict(self.request("GET", PODS, {"namespace": namespace},
                                 query={"labelSelector": label_selector}))

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.request("PATCH", POD, {"namespace": namespace, "name": name}, body=patch,
                     content_type=STRATEGIC_PATCH)

    def get_pod_proxy(self, namespace: str, target: str, path: str, *,
                      timeout: float) -> bytes:
        """GET through the API server's pod proxy (`target` is name:port)."""
        response = self.request("GET", POD_PROXY, {"namespace": namespace, "name": target,
                                                   "path": path}, timeout=timeout, stream=True)
        return bytes(response.data)

    def post_pod_proxy(self, namespace: str, target: str, path: str, body: Any,
                       headers: Mapping[str, str], *, timeout: float) -> tuple[int, bytes]:
        """POST through the pod proxy; (status, body) whatever the status."""
        request = self.api.param_serialize(
            method="POST", resource_path=POD_PROXY,
            path_params={"namespace": namespace, "name": target, "path": path},
            header_params={**headers, "Content-Type": "application/json",
                           "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=timeout)
        return int(response.status), bytes(response.read() or b"")

    # -- deployments --

    def list_deployments(self, namespace: str, **kwargs: Any) -> Any:
        # No docstring on purpose: kubernetes.watch reads a model type from it.
        watching = bool(kwargs.get("watch"))
        return self.request("GET", DEPLOYMENTS, {"namespace": namespace},
                            query=self._query(kwargs), stream=watching,
                            timeout=kwargs.get("_request_timeout") or 10)

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", DEPLOYMENT, {"namespace": namespace, "name": name}))

    def patch_deployment_scale(self, namespace: str, name: str, replicas: int) -> None:
        self.request("PATCH", DEPLOYMENT_SCALE, {"namespace": namespace, "name": name},
                     body={"spec": {"replicas": replicas}}, content_type=MERGE_PATCH)

    # -- everything else --

    def list_hpas(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.request("GET", HPAS, {"namespace": namespace}).get("items") or [])

    def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", LEASE, {"namespace": namespace, "name": name}))

    def replace_lease(self, namespace: str, name: str, lease: Mapping[str, Any]) -> None:
        self.request("PUT", LEASE, {"namespace": namespace, "name": name}, body=lease)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self.request("POST", EVENTS, {"namespace": namespace}, body=event)

    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.request("PATCH", EVENT, {"namespace": namespace, "name": name}, body=patch,
                     content_type=MERGE_PATCH)

    def read_secret(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", SECRET, {"namespace": namespace, "name": name}))

    def list_workerpools(self, namespace: str, **kwargs: Any) -> Any:
        # No docstring on purpose: kubernetes.watch reads a model type from it.
        query, watching = self._query(kwargs), bool(kwargs.get("watch"))
        timeout = kwargs.get("_request_timeout") or 10
        if namespace:
            return self.request("GET", WORKERPOOLS, {"namespace": namespace}, query=query,
                                stream=watching, timeout=timeout)
        return self.request("GET", ALL_WORKERPOOLS, {}, query=query, stream=watching,
                            timeout=timeout)

    def patch_workerpool_status(self, namespace: str, name: str,
                                patch: Mapping[str, Any]) -> None:
        self.request("PATCH", WORKERPOOL_STATUS, {"namespace": namespace, "name": name},
                     body=patch, content_type=MERGE_PATCH)

    def version(self) -> dict[str, Any]:
        return dict(self.request("GET", VERSION, {}))


def timestamp(text: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time from the API, None if absent."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(moment: datetime | None = None) -> str:
    """A Time field (whole seconds)."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime | None = None) -> str:
    """A MicroTime field: always six fraction digits, which the server's layout needs."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
