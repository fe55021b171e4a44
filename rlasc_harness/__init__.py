"""The harness: everything that runs agents and codecs to produce a result, above the agents floor.

Floors (no import runs upward): ``codec_models`` -> ``rlasc_env`` -> ``agents`` -> ``rlasc_harness`` -> scripts.

- :mod:`rlasc_harness.scoring`: the benchmark protocol and :func:`evaluate_policy` (any policy, one score).
- :mod:`rlasc_harness.runner` / :mod:`rlasc_harness.config` / :mod:`rlasc_harness.cli`: ``train_agent.py``.
- :mod:`rlasc_harness.evaluation`: batched evaluation of policies and baselines on the same images.
- :mod:`rlasc_harness.benchmark_table`: the cross-algorithm table of several train_agent.py runs.
- :mod:`rlasc_harness.learnability`: the learnability diagnostic (class table, gap closure).
- :mod:`rlasc_harness.stage3`: stage III (Section III-C), the codec and the agent trained together.
- :mod:`rlasc_harness.evaluate_codecs`: ``evaluate.py``, RL-ASC against the classic codecs.
- :mod:`rlasc_harness.throughput`: ``benchmark.py``, the environment's transitions per second.

It is a package of its own (not inside ``agents``) because it imports agents, codecs and the environment
together; keeping it apart keeps ``agents/`` to policies, algorithms and baselines.
"""
