"""Where a reconcile pass reads the pool's children: the watch cache, shaped like a LIST's answer."""

from __future__ import annotations

from modelpool.controllers.pool_reconciler import CachedChildReader, RefreshingChildReader
from modelpool.kube import Obj


def _obj(name: str, **extra: object) -> Obj:
    return {"metadata": {"name": name, "labels": {"modelpool.dev/pool": "bank"}}, **extra}


async def test_cached_children_are_keyed_by_kind_and_name_with_their_kind_filled_in() -> None:
    deployments = [_obj("bank-small", spec={"replicas": 2}), _obj("bank-large", spec={"replicas": 1})]
    services = [_obj("bank-small")]
    pods = [_obj("bank-small-abc"), _obj("bank-small-def")]
    reader = CachedChildReader(lambda: deployments, lambda: services, lambda: pods)

    children = await reader.children()

    assert set(children) == {"Deployment", "Service"}
    assert children["Deployment"]["bank-small"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        **deployments[0],
    }
    assert children["Deployment"]["bank-large"]["spec"] == {"replicas": 1}
    assert children["Service"]["bank-small"]["apiVersion"] == "v1"
    assert [p["metadata"]["name"] for p in await reader.pods()] == ["bank-small-abc", "bank-small-def"]


async def test_the_cache_is_read_at_each_call_not_when_the_reader_is_made() -> None:
    """The pass reads children at its start and pods at its end: both see the latest watch event."""
    deployments: list[Obj] = []
    reader = CachedChildReader(lambda: deployments, lambda: (), lambda: deployments)
    assert (await reader.children())["Deployment"] == {}
    deployments.append(_obj("bank-small"))
    assert list((await reader.children())["Deployment"]) == ["bank-small"]
    assert len(await reader.pods()) == 1


def test_one_pass_per_resync_period_lists_from_the_api_server() -> None:
    """A child deleted while kopf's watch was down may linger in its index: the API server is
    read at the first pass and again once a period has passed, the cache in between."""
    now = [100.0]
    api = CachedChildReader(lambda: (), lambda: (), lambda: ())
    cache = CachedChildReader(lambda: (), lambda: (), lambda: ())
    readers = RefreshingChildReader(api, cache, every_s=30.0, clock=lambda: now[0])
    picked = []
    for t in (100.0, 101.0, 129.9, 130.0, 131.0, 165.0):
        now[0] = t
        picked.append("api" if readers.for_pass() is api else "cache")
    assert picked == ["api", "cache", "cache", "api", "cache", "api"]
