"""The offline workbench: datasets, models, detectors, training, bundles, benchmarks and figures.

It never imports ``streamdetect``; the worker imports it (models, bundles, training API).
"""
