"""The sidecar router: KServe v2 / Triton HTTP front for a pool's variants.

See ``docs/router.md``.  Entry points: :func:`modelpool.routing.server.serve`,
``modelpool router serve`` and ``python -m modelpool.routing``.
"""
