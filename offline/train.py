"""``python -m offline.train``: the training command (``offline.training.train``) under its usual name."""

from offline.training.train import main

if __name__ == "__main__":
    main()
