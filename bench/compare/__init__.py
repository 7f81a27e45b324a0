"""W3 on Cerebelum, Restate and DBOS Transact, side by side, driven by one open-loop generator.

    python -m bench.compare.install                  # once: pip extras and the Restate server
    python -m bench.compare [--engines cerebelum restate dbos] [--rates 25 50 100 200 400]
                            [--cerebelum-root PATH ...] [--repeat 3]

One command runs every engine through the same phases and writes one JSON and one plot
(bench/results/compare-<timestamp>.{json,png}). The modules, harness side and generator side:

    __main__    the command line; runs the engines in turn, `repeat` times, and writes the result
    run         one engine's run: up, warm-up, idle, closed loop, burst, open-loop sweep, search
                for the highest rate held; CPU of every process of the engine around each phase
    driver      the generator process (one per engine run): the same closed-loop, burst and
                open-loop code for every engine, talking to it through the engine's own client
    engines/    one module per engine: how to start it (services, processes) and its client
    report      medians of repeats, the highest rate held, the plot
    netns       a private network namespace (Restate's server must not reach the internet)
    install     the one command that installs the peers at their pinned versions

Nothing here runs in CI: it starts servers, takes minutes and reports times.
"""
