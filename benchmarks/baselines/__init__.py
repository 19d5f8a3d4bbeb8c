"""The baselines the fleet benchmark compares the orchestrator with: what users run today.

`sequential` backs up one deployment after another, as Esri's admin CLI does; `threadpool` runs the
same per-target sequence on 20 threads. Both are plain `requests` scripts sharing `common`.
"""
