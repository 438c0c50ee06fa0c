"""Query templates and whether a pool may carry them: shared by the API's unit test and the API server's."""

from __future__ import annotations

PROMQL_CASES: list[tuple[str, bool]] = [
    ("sum(rate(nv_inference_request_success{$selector}[$window]))", True),
    ("sum(irate(x{${router_selector}}[${window}])) / 1e6", True),
    ("label_replace(up, 'a', '$$1', 'b', '(.*)')", True),  # $$ is a literal $
    ("max(timestamp(x{$selector}) or timestamp(y{$router_selector}))", True),
    ("sum(x{$selectr})", False),  # typo
    ("sum(x{$selector_x})", False),  # $selector_x is another identifier
    ("sum(x{$span})", False),  # not a pool placeholder
    ("sum(rate(x[${window))", False),  # unclosed brace
    ("cost $", False),  # a lone $ at the end
    ("sum(x{$1})", False),  # $ before a digit
]
