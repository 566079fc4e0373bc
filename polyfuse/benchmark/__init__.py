"""Benchmarks users run on their own data: `polyfuse benchmark fusion`."""
