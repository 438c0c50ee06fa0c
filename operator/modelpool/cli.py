"""The ``modelpool`` command: one entry point with subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelpool.leader import DEFAULT_LEASE_NAME, LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S, Elector

if TYPE_CHECKING:
    from modelpool.kubelogin import Credentials
    from modelpool.startup import Readiness

REPO_ROOT = Path(__file__).resolve().parents[2]
# Subcommand groups contributed by the feature packages (each exposes register(subparsers)).
# The CRDs live in crds/ (kubectl, kustomize) and, identical, in the Helm chart's crds/.
# (folder, with a Kustomization): crds/ is also a kustomize base; the chart's copy is plain.
CRD_DIRS = ((REPO_ROOT / "crds", True), (REPO_ROOT / "charts" / "modelpool" / "crds", False))
API_REFERENCE = REPO_ROOT / "docs" / "api-reference.md"  # every field, from the same schemas
PLUGIN_MODULES = ("modelpool.routing.cli", "modelpool.models.cli", "modelpool.scaling.cli")


def _crds(args: argparse.Namespace) -> int:
    from modelpool.api import crdgen
    from modelpool.api.refdoc import render_reference

    outs = [(Path(p), False) for p in args.out] if args.out else list(CRD_DIRS)
    reference = None if args.out else API_REFERENCE
    if args.check:
        stale = [path for out, kustomize in outs for path in crdgen.stale(out, kustomize)]
        if reference and (not reference.is_file() or reference.read_text() != render_reference()):
            stale.append(reference)
        for path in stale:
            print(f"{path} differs from the models; run `modelpool crds generate`", file=sys.stderr)
        return 1 if stale else 0
    for out, kustomize in outs:
        for path in crdgen.generate(out, kustomize):
            print(f"wrote {path}")
    if reference:
        reference.write_text(render_reference())
        print(f"wrote {reference}")
    return 0


def _devcluster(args: argparse.Namespace) -> int:
    from modelpool.devcluster import toolchain
    from modelpool.devcluster.cluster import DevCluster

    if args.action == "build":
        for report in toolchain.build_all():
            state = "cached" if report.cached else f"built in {report.seconds:.0f} s"
            print(f"{report.tool:<24} {state}")
        print(f"binaries in {toolchain.bin_dir()}")
        return 0
    cluster = DevCluster(name=args.name)
    if args.action == "up":
        cluster.create(nodes=args.nodes, gpus_per_node=args.gpus_per_node)
        print(f"cluster {args.name} is up; KUBECONFIG={cluster.kubeconfig}")
    elif args.action == "down":
        cluster.delete()
        print(f"cluster {args.name} deleted")
    else:
        print("up" if cluster.is_up() else "down")
    return 0


def use_kopf_logging(verbose: bool) -> None:
    """Let kopf's handler (which prefixes each object's namespace/name) be the only one on the root
    logger: ``main``'s ``basicConfig`` handler stayed beside it, and every line was printed twice."""
    import kopf

    logging.getLogger().handlers.clear()
    kopf.configure(verbose=verbose)


def port_number(text: str) -> int:
    """A TCP port number (1-65535), for argparse."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def log_level(text: str) -> str:
    """A logging level name, for argparse."""
    if not isinstance(logging.getLevelName(text.upper()), int):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return text.upper()


def _operator(args: argparse.Namespace) -> int:
    from modelpool.kubelogin import KubeConfigError, load_credentials
    from modelpool.startup import Readiness, config_problems, lease_config, preflight, serve_metrics

    problems = config_problems(args)
    try:
        credentials = load_credentials()
    except KubeConfigError as err:
        problems.append(f"cannot log in to Kubernetes: {err}")
    if problems:
        for problem in problems:
            logging.getLogger("modelpool.operator").error("configuration: %s", problem)
        return 2
    lease = lease_config(args)
    elector = None if lease is None else Elector(lease)
    if elector is not None:
        # Until kopf installs its own handler, SIGTERM ends the wait, or releases the lease just taken.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # --readiness: served from now until the process ends (503 while it waits for the API server
    # or a permission, 200 for a standby and once kopf runs).
    readiness = Readiness(args.readiness, f"the API server at {credentials.server}").serve()
    serve_metrics(args.metrics_port)
    if elector is not None:
        return _lead(args, credentials, elector, readiness)
    try:
        # Waits for the API server and the permissions, serving --liveness meanwhile (then frees it
        # for kopf).
        refused = preflight(credentials, args.namespace or None, args.liveness, readiness=readiness)
    except KeyboardInterrupt:
        return 130
    if refused is not None:
        logging.getLogger("modelpool.operator").error("configuration: %s", refused)
        return 2
    _run_kopf(args, credentials, readiness)
    return 0


def _run_kopf(args: argparse.Namespace, credentials: Credentials, readiness: Readiness) -> None:
    import kopf

    if args.prometheus_url:
        os.environ["MODELPOOL_PROMETHEUS_URL"] = args.prometheus_url
    # -- Prometheus allowlist (--prometheus-allowed-urls): read by the ScalingPlanner --
    if args.prometheus_allowed_urls:
        os.environ["MODELPOOL_PROMETHEUS_ALLOWED_URLS"] = ",".join(args.prometheus_allowed_urls)
    # -- end of Prometheus allowlist --
    # -- GPU pool sharing (--gpu-pool-sharing): read by the ScalingPlanner the handlers create --
    if args.gpu_pool_sharing:
        os.environ["MODELPOOL_GPU_POOL_SHARING"] = args.gpu_pool_sharing
    # -- end of GPU pool sharing --
    importlib.import_module("modelpool.controllers.handlers")
    use_kopf_logging(args.verbose)
    started = threading.Event()  # set by kopf once its startup handlers ran: "ready: running"
    readiness.running(started)
    try:
        # standalone: no kopf peering; with --leader-elect the Lease makes this replica the only one.
        kopf.run(
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            standalone=True,
            liveness_endpoint=args.liveness,
            ready_flag=started,
            memo=kopf.Memo(credentials=credentials),  # kopf logs in as the checks before it did
        )
    finally:
        readiness.not_ready("kopf stopped")  # the process ends now (a SIGTERM, or a crash)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds through the finally that releases the lease


def _lead(args: argparse.Namespace, credentials: Credentials, elector: Elector, readiness: Readiness) -> int:
    """Wait for the leader lease (after the API server and the permissions), then run kopf while this
    replica holds it: renewed meanwhile, released after. The release is in a ``finally`` around the
    wait too: a SIGTERM in the moment between the taking of the lease and kopf's start (or while the
    answer to the taking is on its way) releases it as well, and the standby need not wait the lease
    duration. A replica that never wrote itself into the lease releases nothing."""
    from modelpool.leadership import Leadership, LeaseApi
    from modelpool.startup import api_client, preflight

    lease = elector.config
    log = logging.getLogger("modelpool.operator")
    with api_client(credentials) as http:
        leadership = Leadership(LeaseApi(http, lease, timeout=lease.timing.renew_deadline_s / 2), elector)
        try:
            # Waits for the API server, the permissions and (a standby) the leader lease, serving
            # --liveness meanwhile (then frees it for kopf).
            refused = preflight(
                credentials, args.namespace or None, args.liveness, elector=elector, readiness=readiness
            )
            if refused is not None:
                log.error("configuration: %s", refused)
                return 2
            leadership.start()
            _run_kopf(args, credentials, readiness)
        except KeyboardInterrupt:
            return 130
        finally:
            leadership.stop()
            leadership.release()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from modelpool.demo import run_demo

    return int(run_demo(hold_seconds=args.hold, cluster_name=args.name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelpool", description=__doc__)
    parser.add_argument("--log-level", default="INFO", type=log_level)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="generate or check crds/ from the API models")
    crds.add_argument("action", choices=["generate"])
    crds.add_argument(
        "--out",
        action="append",
        help="folder to write (repeatable; default: crds/ and the Helm chart's crds/)",
    )
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    crds.set_defaults(func=_crds)

    dev = sub.add_parser("devcluster", help="build and run the local kwok control plane")
    dev.add_argument("action", choices=["build", "up", "down", "status"])
    dev.add_argument("--name", default="modelpool")
    dev.add_argument("--nodes", type=int, default=2)
    dev.add_argument("--gpus-per-node", type=int, default=8)
    dev.set_defaults(func=_devcluster)

    op = sub.add_parser("operator", help="run the operator (kopf)")
    op.add_argument("action", choices=["run"])
    op.add_argument("--namespace", action="append", help="watch only these namespaces (default: all)")
    op.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8081/healthz")
    op.add_argument(
        "--readiness",
        default=None,
        help="serve whether this replica can do its job here, e.g. http://0.0.0.0:8082/readyz: 503 "
        "while it waits for the API server or a permission, 200 for a standby and once kopf runs",
    )
    op.add_argument("--verbose", action="store_true")
    op.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus for pools that do not name one (live-metrics scaling)",
    )
    # -- Prometheus allowlist --
    op.add_argument(
        "--prometheus-allowed-urls",
        action="append",
        default=None,
        metavar="URLS",
        help="the Prometheus URLs a pool's spec.scaling.prometheusURL may name, at or below one of "
        "them (repeatable, or comma-separated; else $MODELPOOL_PROMETHEUS_ALLOWED_URLS): a pool "
        "naming another is not asked and holds; --prometheus-url is always allowed; default: any "
        "(recommended on shared clusters: docs/install.md, Hardening)",
    )
    # -- end of Prometheus allowlist --
    op.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        help="serve the operator's own /metrics on this port",
    )
    # -- GPU pool sharing --
    op.add_argument(
        "--gpu-pool-sharing",
        choices=["namespace", "cluster"],
        default=None,
        help="who shares a GPU pool that ModelPools name in spec.gpuPool.name: 'namespace' (the "
        "default; else $MODELPOOL_GPU_POOL_SHARING) only the pools of one namespace, 'cluster' the "
        "pools of every watched namespace (each namespace's authors can then lower the others' "
        "budget: docs/install.md, Hardening)",
    )
    # -- end of GPU pool sharing --
    election = op.add_argument_group(
        "leader election",
        "run two or more replicas: the one holding a coordination.k8s.io Lease reconciles, the "
        "others wait as standbys and take over when it stops renewing the Lease (docs/install.md)",
    )
    election.add_argument(
        "--leader-elect", action="store_true", help="reconcile only while holding the leader Lease"
    )
    election.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: the pod's own, from its service account, else $POD_NAMESPACE)",
    )
    election.add_argument(
        "--leader-election-id", default=DEFAULT_LEASE_NAME, help="name of the Lease (default %(default)s)"
    )
    election.add_argument(
        "--leader-election-lease-duration",
        type=int,
        default=LEASE_DURATION_S,
        metavar="SECONDS",
        help="a standby takes the Lease over once it has not changed for this long (default %(default)s)",
    )
    election.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=RENEW_DEADLINE_S,
        metavar="SECONDS",
        help="the leader exits when it could not renew the Lease for this long; less than the lease "
        "duration (default %(default)s)",
    )
    election.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=RETRY_PERIOD_S,
        metavar="SECONDS",
        help="the leader renews, a standby looks at the Lease, this often (default %(default)s)",
    )
    op.set_defaults(func=_operator)

    demo = sub.add_parser("demo", help="local demo on the embedded default cluster")
    demo.add_argument(
        "--hold",
        type=float,
        default=None,
        help="seconds to keep the operator running after the demo "
        "(default: until Ctrl-C on a terminal, else 0)",
    )
    demo.add_argument(
        "--name", default="modelpool", help="the local cluster to start or reuse (default %(default)s)"
    )
    demo.set_defaults(func=_demo)

    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
