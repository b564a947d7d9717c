"""Metric sources for canary analysis: `prometheus` (PromQL over the HTTP API) and `http_probe` (requests
changeflow sends itself). A source answers with numbers or raises MetricError; the analysis in
models/_canary turns an error into an inconclusive measurement, never a healthy one.
"""


class MetricError(Exception):
    """The source gave no usable value (unreachable, bad query, empty result)."""
