"""Pure ``torch.nn.Module`` definitions: no I/O and no training loops (those live in detectors)."""
