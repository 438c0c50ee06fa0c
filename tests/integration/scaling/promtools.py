"""What the tests against a real Prometheus share: a tiny exporter on 127.0.0.1 for it to scrape
(every GET is answered with the series ``lines()`` returns at that moment, in the text exposition
format, so a test says exactly what each scrape finds), and one read of a variant's metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.scaling.prometheus_reader import PrometheusReader, QueryTemplates, VariantTarget
from modelpool.scaling.types import VariantMetrics
from unit.scaling.fake_prometheus import FakePrometheus


class Exporter:
    """Serves ``lines()`` (joined, newline-terminated) at every path once :meth:`start` is called."""

    def __init__(self, lines: Callable[[], Iterable[str]]) -> None:
        self.lines = lines
        self._serving: ExitStack | None = None

    def _scrape(self, _query: str) -> tuple[int, bytes]:
        return 200, ("\n".join(self.lines()) + "\n").encode()

    def start(self) -> str:
        """Starts serving; returns the scrape target, ``127.0.0.1:<port>``."""
        server = FakePrometheus(self._scrape, content_type="text/plain; version=0.0.4")
        self._serving = ExitStack()
        self._serving.enter_context(server.serving())
        return server.url.removeprefix("http://")

    def stop(self) -> None:
        """Stops serving (the target goes down for the scraper); a second call does nothing."""
        if self._serving is not None:
            self._serving.close()
            self._serving = None


@contextmanager
def exporting(lines: Callable[[], Iterable[str]]) -> Iterator[str]:
    """An :class:`Exporter` of ``lines`` serving while the block runs; yields its scrape target."""
    exporter = Exporter(lines)
    try:
        yield exporter.start()
    finally:
        exporter.stop()


async def read_variant(
    prom: PrometheusProcess, target: VariantTarget, templates: QueryTemplates | None = None
) -> VariantMetrics:
    """One read of ``target``'s metrics from ``prom`` (with ``templates``' queries): rates over
    3 s, series over the last 6 s at a 1 s step, for a Prometheus scraping every second."""
    reader = PrometheusReader(prom.url, templates=templates, rate_window_s=3.0, series_span_s=6.0, step_s=1.0)
    try:
        return await reader.read_variant(target)
    finally:
        await reader.aclose()
