"""``python -m offline.benchmark``: the benchmark runner (``offline.evaluation.benchmark``) under its usual name."""

from offline.evaluation.benchmark import main

if __name__ == "__main__":
    main()
