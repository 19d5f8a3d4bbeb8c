"""The fleet benchmark (`make bench`): the orchestrator against a sequential loop and a thread pool.

`figures` holds the pure arithmetic (ideal bounds, percentiles, detection lag, extrapolation), `fleet`
the fleet and its seeded job durations, `processes` the simulator and contender subprocesses,
`contenders` what each contender is and how its records are read, `output` the JSON, Markdown and chart.
"""
