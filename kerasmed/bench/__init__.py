"""Benchmarks: `kerasmed bench-train` measures training throughput against its ceiling and a peer."""
