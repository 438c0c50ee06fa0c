"""Model variants (small, quantized, large) of one intent classifier, their Triton export,
capability profiles and the complexity scorer used by the router's ``tiered`` mode."""
