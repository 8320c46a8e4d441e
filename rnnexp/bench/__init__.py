"""Benchmarks behind the numbers in the README, each runnable as a module:

    python -m rnnexp.bench.backends    native vs explicit backend, training-step time and ratio
    python -m rnnexp.bench.memory      peak memory of full vs truncated BPTT on pixel sequences
"""
