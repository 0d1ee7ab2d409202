"""Benchmarks (make bench): micro-benchmarks, correlation quality and cost, the faust exactly-once check."""
