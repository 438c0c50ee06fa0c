"""Pure builders for a variant's Triton Deployment, Service and PodDisruptionBudget.

Nothing here talks to the API server: the controllers call these with a parsed
spec and get plain manifests back, which makes them trivial to test and to diff
against the live objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

from modelpool.api.base import API_VERSION
from modelpool.api.modelpool import EnvVar, GpuPool, ModelPoolSpec, Toleration, TritonSpec, Variant

Manifest = dict[str, Any]

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

MANAGED_BY = "modelpool"
LABEL_POOL = "modelpool.dev/pool"
LABEL_VARIANT = "modelpool.dev/variant"
LABEL_TIER = "modelpool.dev/tier"
ANNOTATION_MODEL_VERSION = "modelpool.dev/model-version"
POD_TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller puts on each ReplicaSet's pods (one value per template)."""
SHM_VOLUME = "dshm"
"""The memory-backed emptyDir mounted at /dev/shm (Triton's Python backend keeps its tensors there)."""
TMP_VOLUME = "tmp"
"""The emptyDir mounted at /tmp: the pod's own, whatever the image's /tmp is (see :func:`pod_volumes`)."""
STARTUP_PROBE_PERIOD = 10
"""Seconds between startup probes: ``startupTimeoutSeconds`` is a whole number of them."""


def child_name(pool: str, variant: str) -> str:
    """Name of the Deployment, Service and PodDisruptionBudget of ``variant`` in ``pool``."""
    return f"{pool}-{variant}"


def selector_labels(pool: str, variant: str) -> dict[str, str]:
    return {LABEL_POOL: pool, LABEL_VARIANT: variant}


def child_labels(pool: str, variant: Variant) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": child_name(pool, variant.name),
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "modelpool",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_TIER: variant.tier,
        **selector_labels(pool, variant.name),
    }


def owner_reference(pool: str, uid: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelPool",
        "name": pool,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def triton_args(variant: Variant) -> list[str]:
    """tritonserver command line: explicit model control with the variant's model loaded."""
    return [
        "tritonserver",
        f"--model-repository={variant.model.repository}",
        "--model-control-mode=explicit",
        f"--load-model={variant.model.name}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--strict-readiness=true",
        *variant.triton.args,
    ]


def container_resources(gpu_pool: GpuPool, variant: Variant) -> Manifest:
    amounts: dict[str, str] = {"cpu": variant.resources.cpu, "memory": variant.resources.memory}
    if variant.gpus_per_replica > 0:
        amounts[gpu_pool.resource_name] = str(variant.gpus_per_replica)
    # Requests equal limits: extended resources demand it, and it gives the Guaranteed QoS class.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(path: str, *, period: int, failures: int, timeout: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def probes(triton: TritonSpec) -> Manifest:
    """The container's startup, readiness and liveness probes on Triton's health endpoints.

    Model loads can be slow: the startup probe allows ``startupTimeoutSeconds`` (rounded up to its
    period) before liveness applies; ``probeTimeoutSeconds`` bounds each answer."""
    timeout = triton.probe_timeout_seconds
    startup_failures = -(-triton.startup_timeout_seconds // STARTUP_PROBE_PERIOD)
    return {
        "startupProbe": _probe(
            "/v2/health/ready", period=STARTUP_PROBE_PERIOD, failures=startup_failures, timeout=timeout
        ),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3, timeout=timeout),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3, timeout=timeout),
    }


def env_var(var: EnvVar) -> Manifest:
    """One environment variable as the API server stores it: an empty value is left out
    (``omitempty``: sent, it would look drifted on every pass), as is an unset ``optional``."""
    if var.value_from is not None:
        return {"name": var.name, "valueFrom": var.value_from.to_wire()}
    return {"name": var.name, **({"value": var.value} if var.value else {})}


def toleration(t: Toleration) -> Manifest:
    """A toleration as the API server stores it: an empty key (every taint, with Exists) or value is
    left out (``omitempty``: sent, it would look drifted on every pass)."""
    return {k: v for k, v in t.to_wire().items() if v != ""}


def container_security_context() -> Manifest:
    """What every Triton container gets (a new dict each time: manifests are edited by callers):
    tritonserver needs no capability and no setuid. The user is left to the image (root for the
    stock images) unless ``triton.securityContext`` sets it (:func:`pod_security_context`)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_security_context(triton: TritonSpec) -> Manifest:
    """The pod's securityContext: the RuntimeDefault seccomp profile, and the user, group and
    fsGroup ``triton.securityContext`` sets (only those: an unset one is the image's)."""
    chosen = triton.security_context.to_wire() if triton.security_context is not None else {}
    return {"seccompProfile": {"type": "RuntimeDefault"}, **chosen}


def pod_volumes(triton: TritonSpec) -> list[Manifest]:
    """The Triton pod's volumes, both emptyDirs that the container mounts.

    * ``/dev/shm``, memory-backed, ``sharedMemorySize``: the runtime's own is 64 MiB, too small
      for the Python backend's shared memory.
    * ``/tmp``, on the node's disk, without a sizeLimit: the Python backend aborts the server as
      it loads a model when it cannot make ``/tmp/python_env_XXXXXX`` (a fixed path: ``TMPDIR`` is
      not read), so the pod brings a ``/tmp`` its user may write instead of relying on the image's
      (world-writable in the stock images, not in every custom one, and read-only under
      ``readOnlyRootFilesystem``). Triton also downloads an ``s3://``, ``gs://`` or ``as://``
      model repository there and the Python backend unpacks an ``EXECUTION_ENV_PATH`` archive
      there, each as large as it is: a fixed limit would evict the pods of a large model. Before
      this volume the same files went to the container's writable layer, the node's disk without
      a limit either; a LimitRange's ephemeral-storage limit and the kubelet's eviction under
      disk pressure count both alike.
    """
    return [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": triton.shared_memory_size}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]


def build_pod_template(pool: str, spec: ModelPoolSpec, variant: Variant) -> Manifest:
    labels = child_labels(pool, variant)
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    if variant.model.version is not None:
        annotations[ANNOTATION_MODEL_VERSION] = str(variant.model.version)
    container: Manifest = {
        "name": "triton",
        "image": variant.triton.image,
        "args": triton_args(variant),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": container_resources(spec.gpu_pool, variant),
        **probes(variant.triton),
        # A Triton that exits (a model that fails to load) writes no termination message: the
        # kubelet then keeps the tail of its log, which the pool's Degraded condition quotes.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": container_security_context(),
    }
    if variant.triton.env:
        container["env"] = [env_var(e) for e in variant.triton.env]
    pod_spec: Manifest = {"containers": [container], "volumes": pod_volumes(variant.triton)}
    if variant.triton.service_account_name is not None:
        pod_spec["serviceAccountName"] = variant.triton.service_account_name
    else:
        # Triton never calls the API server; only a named ServiceAccount (workload identity reads
        # its projected token) gets the token, as that ServiceAccount says.
        pod_spec["automountServiceAccountToken"] = False
    pod_spec["securityContext"] = pod_security_context(variant.triton)
    if spec.gpu_pool.node_selector:
        pod_spec["nodeSelector"] = dict(spec.gpu_pool.node_selector)
    if spec.gpu_pool.tolerations:
        pod_spec["tolerations"] = [toleration(t) for t in spec.gpu_pool.tolerations]
    pod_spec["topologySpreadConstraints"] = topology_spread_constraints(pool, spec, variant)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def topology_spread_constraints(pool: str, spec: ModelPoolSpec, variant: Variant) -> list[Manifest]:
    """One constraint per topology key of the spreading that applies to ``variant`` (its own, else
    the pool's); an empty list when it is off.

    They count exactly the variant's pods (the Deployment's selector) of the same ReplicaSet
    (``matchLabelKeys: [pod-template-hash]``, which the Deployment controller sets), so while a
    rollout surges, the old ReplicaSet's pods, about to go, do not push the new ones onto the
    same nodes. ``nodeTaintsPolicy: Honor`` leaves out the nodes the pods cannot go to, a cordoned
    node among them: under ``DoNotSchedule`` a drained node, still counted with no replica, would
    otherwise keep the evicted replica Pending until the node is back. Off, the list is empty:
    the API server stores no such field, and :func:`is_subset` takes an empty list for an absent
    field, while a live Deployment that still has constraints differs and is corrected.
    """
    spread = spec.topology_spread_of(variant)
    if not spread.enabled:
        return []
    return [
        {
            "maxSkew": spread.max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": spread.when_unsatisfiable,
            "labelSelector": {"matchLabels": selector_labels(pool, variant.name)},
            "matchLabelKeys": [POD_TEMPLATE_HASH],
            "nodeTaintsPolicy": "Honor",
        }
        for key in spread.topology_keys
    ]


def child_metadata(pool: str, namespace: str, uid: str, variant: Variant) -> Manifest:
    """Name, labels and controller reference shared by a variant's children."""
    return {
        "name": child_name(pool, variant.name),
        "namespace": namespace,
        "labels": child_labels(pool, variant),
        "ownerReferences": [owner_reference(pool, uid)],
    }


def build_deployment(
    pool: str, namespace: str, uid: str, spec: ModelPoolSpec, variant: Variant, replicas: int
) -> Manifest:
    """The Deployment that runs ``replicas`` Triton servers of ``variant``."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(pool, namespace, uid, variant),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(pool, variant.name)},
            # Surge one at a time and never drop below the desired count while rolling.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": build_pod_template(pool, spec, variant),
        },
    }


def build_service(pool: str, namespace: str, uid: str, variant: Variant) -> Manifest:
    """The ClusterIP Service in front of a variant's replicas."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(pool, namespace, uid, variant),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(pool, variant.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def build_pod_disruption_budget(
    pool: str, namespace: str, uid: str, spec: ModelPoolSpec, variant: Variant
) -> Manifest | None:
    """The PodDisruptionBudget that bounds how many of ``variant``'s replicas voluntary evictions
    (node drains, cluster upgrades, the cluster autoscaler) take at once; None when its budget
    (the variant's own, else the pool's) is off. It selects exactly the pods of the variant's
    Deployment (the same selector)."""
    budget = spec.disruption_budget_of(variant)
    if not budget.enabled:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(pool, namespace, uid, variant),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(pool, variant.name)},
            # A replica that is not Ready (a model that does not load, an image that cannot be
            # pulled) serves nothing: evicting it costs no capacity, and under the default policy
            # (IfHealthyBudget) it could hold a node drain while the healthy replicas are short.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


MAP_LIST_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "containers": (("name",),),
    "initContainers": (("name",),),
    "env": (("name",),),
    "volumes": (("name",),),
    "volumeMounts": (("mountPath",),),
    "ports": (("containerPort", "protocol"), ("port", "protocol")),  # a container's, a Service's
    "ownerReferences": (("uid",),),
}
"""The fields of the children that are map-lists (``x-kubernetes-list-type: map``) by the keys of
their entries: a server-side apply merges these by key and keeps the entries another field manager
owns (``kubectl set env``, a mutating webhook, a policy engine), so they compare by key."""


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field ``desired`` sets has the same value in ``live``.

    Fields the API server defaults (imagePullPolicy, terminationMessagePath, ...) are
    ignored, so an unchanged child never looks drifted. Map-lists (:data:`MAP_LIST_KEYS`) match
    entry by key, in any order, ignoring live entries the manifest does not set (another field
    manager's, which a server-side apply keeps); other lists must match item by item. An empty
    list matches an absent field (the API server omits empty lists), so a builder that emits ``[]``
    clears what it set before: a live non-empty list then differs.
    """
    return _is_subset(desired, live, None)


def _is_subset(desired: Any, live: Any, name: str | None) -> bool:
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            _is_subset(v, live[k], k) if k in live else v == [] for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        keys = _map_keys(name, desired)
        if keys is not None:
            by_key = {_key(item, keys): item for item in live if isinstance(item, dict)}
            return all(
                (k := _key(item, keys)) in by_key and _is_subset(item, by_key[k], None) for item in desired
            )
        return len(desired) == len(live) and all(
            _is_subset(d, lv, None) for d, lv in zip(desired, live, strict=True)
        )
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str):
        want, have = parse_quantity(desired), parse_quantity(live)
        return want is not None and want == have
    return False


def _map_keys(name: str | None, desired: Sequence[Any]) -> tuple[str, ...] | None:
    """The keys the entries of map-list ``name`` are merged by; None for any other list, or one
    whose entries the manifest does not all key (then compared item by item)."""
    for keys in MAP_LIST_KEYS.get(name or "", ()):
        if all(isinstance(item, dict) and all(k in item for k in keys) for item in desired):
            return keys
    return None


def _key(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(item.get(k) for k in keys)


_QUANTITY_SUFFIX = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_MILLI = Decimal("0.001")
_EXACT = Context(prec=200)
"""Enough digits for any quantity the schema admits (64 characters, times 2**60), so none is rounded."""
_MAX_BINARY = Decimal(2**63 - 1)
"""The API server caps a quantity with a binary suffix (``Ki`` ... ``Ei``) at the largest int64."""


def parse_quantity(text: str) -> Decimal | None:
    """Value of a Kubernetes quantity such as ``500m`` or ``4Gi`` as the API server stores it in a
    pod template; None when ``text`` is not one.

    The API server stores quantities in canonical form (``1000m`` becomes ``1``), rounds them up to
    a thousandth (``0.0001`` becomes ``1m``) and caps binary ones at the largest int64 (``8Ei``
    becomes ``9223372036854775807``), so drift checks compare these values, not spellings.
    """
    match = _QUANTITY.match(text)
    if match is None:
        return None
    suffix = match.group(2) or ""
    exact = _EXACT.multiply(Decimal(match.group(1)), _QUANTITY_SUFFIX[suffix])
    value = exact.quantize(_MILLI, rounding=ROUND_CEILING, context=_EXACT)
    return min(value, _MAX_BINARY) if suffix.endswith("i") else value
