"""Judge trust: agreement with people (calibrate), tuned-vs-base evaluation (eval), and reward-hacking
and drift detectors that watch a training run."""
