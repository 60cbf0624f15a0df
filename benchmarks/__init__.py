"""Benchmarks for keras_vtn: forward/training speed, memory, FLOPs, scaling, LAPS overhead.

Entry points (run from the repository root): `python -m benchmarks.models`,
`python -m benchmarks.scaling`, `python -m benchmarks.laps_overhead`,
`python -m benchmarks.train_step`, `python -m benchmarks.gpu_mfu`. This package imports neither
keras nor torch at import time: each measurement runs in a fresh subprocess.
"""
