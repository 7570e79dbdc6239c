"""Benchmarks of envctl; results and the commands that reproduce them are in BENCHMARKS.md."""
