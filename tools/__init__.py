"""Tools that run the stages: benchmarks (python -m tools.bench) and the GPU check
(python -m tools.gpu_check)."""
