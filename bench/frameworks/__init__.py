"""One adapter per framework: how to pre-load its queue, start its worker, see what is left."""

from __future__ import annotations

from bench.frameworks.base import BrokerTarget, Framework
from bench.frameworks.celery import CeleryFramework
from bench.frameworks.dramatiq import DramatiqFramework
from bench.frameworks.qscale import QscaleFramework
from bench.frameworks.rq import RqFramework

FRAMEWORKS: dict[str, type[Framework]] = {
    "qscale": QscaleFramework,
    "celery": CeleryFramework,
    "dramatiq": DramatiqFramework,
    "rq": RqFramework,
}

__all__ = ["FRAMEWORKS", "BrokerTarget", "Framework"]
