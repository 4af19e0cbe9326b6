"""procvisor's benchmarks: ``python -m bench NAME`` (from the repository root).

Each benchmark measures procvisor beside its peers in the same run, repeats every variant
(interleaved, so the noise of a shared machine hits all of them alike), prints a markdown
report and appends it to ``bench/RESULTS.md``. ``python -m bench --list`` lists them.
"""
