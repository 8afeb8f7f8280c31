"""Detector registry: names -> classes, imported lazily so that the CLI, the benchmark and the
worker never special-case a model and never pay for imports they do not use."""

from __future__ import annotations

from importlib import import_module

from offline.detectors.base import Detector

REGISTRY: dict[str, str] = {
    "ae": "offline.detectors.reconstruction:AutoencoderDetector",
    "vae": "offline.detectors.reconstruction:VAEDetector",
    "deepsvdd": "offline.detectors.deep_svdd:DeepSVDDDetector",
    "copula": "offline.detectors.deep_svdd:CopulaDistanceDetector",
    "labelled": "offline.detectors.labelled:LabelledStageDetector",
    "iforest": "offline.detectors.baselines:IsolationForestDetector",
    "hst": "offline.detectors.baselines:HalfSpaceTreesDetector",
    "streaming-likelihood": "offline.detectors.sensor_likelihood:StreamingLikelihoodDetector",
    "ocsvm": "offline.detectors.ocsvm:OneClassSVMDetector",
    "knn": "offline.detectors.knn:KNNDetector",
    "dcgan": "offline.detectors.gan.dcgan:DCGANDetector",
    "anogan": "offline.detectors.gan.anogan:AnoGANDetector",
    "egbad": "offline.detectors.gan.egbad:EGBADDetector",
    "ganomaly": "offline.detectors.gan.ganomaly:GANomalyDetector",
    "fanogan": "offline.detectors.gan.fanogan:FAnoGANDetector",
    "twodisc": "offline.detectors.gan.twodisc:TwoDiscriminatorDetector",
    "cgan": "offline.detectors.gan.conditional:ConditionalGANDetector",
    "cvae": "offline.detectors.gan.conditional:ConditionalVAEDetector",
    "geom": "offline.detectors.geometric:GeometricTransformDetector",
    "fusion": "offline.detectors.fusion:FusionDetector",
}


def detector_class(name: str) -> type[Detector]:
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return getattr(import_module(module), cls)


def make_detector(name: str, **params) -> Detector:
    return detector_class(name)(**params)


def keyword_params(name: str) -> set[str]:
    """The hyperparameters a model takes (its keyword-only constructor arguments)."""
    import inspect

    return {p.name for p in inspect.signature(detector_class(name).__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}


__all__ = ["Detector", "REGISTRY", "detector_class", "keyword_params", "make_detector"]
