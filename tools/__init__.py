"""Tools that run the stages: benchmarks (python -m tools.bench) and the GPU check
(python -m tools.gpu_check); and check_python.py, make's check of the Python it builds .venv
with."""
