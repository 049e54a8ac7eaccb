"""The `scalpscan` command, the demo and the benchmark scripts."""
