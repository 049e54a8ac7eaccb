"""Patients of unknown identity, and how each photo's patient was found.

``patients.known`` is false for a patient made of one imported photo that nothing named
(a patient of its own, flagged on the pages); ``photos.subject_source`` keeps how an import
found the photo's patient (a key of ``scalpscan.inference.inputs.SUBJECT_SOURCES``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two columns; every existing patient is known (it was created or named by staff or a row)."""
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("known", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("subject_source", sa.String(12), nullable=True))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("subject_source")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("known")
