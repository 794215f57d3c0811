"""Model and dataset cards rendered from the Jinja templates in the repository's `model_cards/` folder."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

# The templates ship beside the package in a source checkout: <repo>/model_cards/*.md.j2
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "model_cards"


def template_path(name: str, templates_dir: str | os.PathLike | None = None) -> Path:
    """Path of a card template, e.g. `template_path("dataset_card.md.j2")`; a clear error when missing."""
    path = Path(templates_dir or TEMPLATES_DIR) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"Card template {str(path)!r} not found. Run from a source checkout of diffusers-sonify or pass "
            "`templates_dir=` pointing at its model_cards/ folder."
        )
    return path


def render_model_card(
    card_data: ModelCardData, template: str = "model_card.md.j2", templates_dir=None, **context
) -> ModelCard:
    """Render a model card: YAML metadata from `card_data`, body from the template with `context`."""
    return ModelCard.from_template(card_data, template_path=str(template_path(template, templates_dir)), **context)


def render_dataset_card(
    card_data: DatasetCardData, template: str = "dataset_card.md.j2", templates_dir=None, **context
) -> DatasetCard:
    """Render a dataset card: YAML metadata from `card_data`, body from the template with `context`."""
    return DatasetCard.from_template(card_data, template_path=str(template_path(template, templates_dir)), **context)
