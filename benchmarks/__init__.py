"""Benchmarks: our pipeline against the article's recipe on a CPU (`make bench`), and on a GPU."""
