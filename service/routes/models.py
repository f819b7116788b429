"""GET /models."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import AnyServicesDep
from service.schemas import ModelOut

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelOut])
def list_models(svc: AnyServicesDep) -> list[ModelOut]:
    """The models this deployment serves, by name: POST /generate's `model` takes a name."""
    models = svc.models.models()
    default = svc.models.default_name(models)
    return [
        ModelOut(
            name=m.name,
            version=m.version,
            resolution=m.resolution,
            max_frames=m.max_frames,
            trained_on=m.trained_on,
            classes=list(m.classes),
            labels_per_video=m.labels_per_video,
            default=m.name == default,
        )
        for m in models
    ]
