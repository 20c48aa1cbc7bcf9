"""Plain end-to-end fine-tuning with cross-entropy (ZS-init-CE or LP-init-CE = LP-FT)."""
from __future__ import annotations

from .base import CEFamily


class CE(CEFamily):
    name = "ce"
    title = "Cross-entropy (plain fine-tuning)"
    description = ("Standard end-to-end fine-tuning: image tower + classifier head trained with cross-entropy. "
                   "Head from class prompts (zs) or a linear probe (lp = LP-FT). The baseline that forgets.")
