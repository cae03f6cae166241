"""Licences at provincial scale: bulk imports and provenance, files waiting to be sealed, status lists, requests for
missing licences (索取), status-event subscriptions.

Revision ID: licenses_0005
Revises: licenses_0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "licenses_0005"
down_revision = "licenses_0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "licenses_imports",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("type_code", sa.String(21), nullable=False),
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("imported_by", sa.String(200), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("rows_added", sa.Integer(), nullable=False),
        sa.Column("rows_existing", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("resume_after", sa.Integer(), nullable=False),
        sa.Column("error_report", sa.String(400), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["type_code"], ["licenses_types.code"], name="fk_licenses_imports_type_code_licenses_types"),
        sa.ForeignKeyConstraint(
            ["issuer_code"], ["licenses_issuers.credit_code"], name="fk_licenses_imports_issuer_code_licenses_issuers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_imports"),
    )
    op.create_index("ix_licenses_imports_source_sha256", "licenses_imports", ["source_sha256"])
    with op.batch_alter_table("licenses_licences") as batch:
        batch.add_column(sa.Column("import_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("source_row", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("file_state", sa.String(8), nullable=False, server_default="sealed"))
        batch.add_column(sa.Column("status_list", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("status_index", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_licenses_licences_import_id_licenses_imports", "licenses_imports", ["import_id"], ["id"])
        batch.create_unique_constraint("uq_licenses_licences_status_entry", ["issuer_code", "status_list", "status_index"])
        batch.create_index("ix_licenses_licences_file_state", ["file_state"])
    with op.batch_alter_table("licenses_licences") as batch:
        batch.alter_column("file_state", server_default=None)
    op.create_table(
        "licenses_status_lists",
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("list_number", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(12), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("bits", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_code"], ["licenses_issuers.credit_code"], name="fk_licenses_status_lists_issuer_code_licenses_issuers"
        ),
        sa.PrimaryKeyConstraint("issuer_code", "list_number", "purpose", name="pk_licenses_status_lists"),
    )
    op.create_table(
        "licenses_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("type_code", sa.String(21), nullable=False),
        sa.Column("issuer_code", sa.String(18), nullable=False),
        sa.Column("holder_type", sa.String(3), nullable=False),
        sa.Column("holder_hash", sa.String(64), nullable=False),
        sa.Column("holder_masked", sa.String(24), nullable=False),
        sa.Column("holder_cipher", sa.LargeBinary(), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("matter", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(200), nullable=False),
        sa.Column("identifier", sa.String(120), nullable=True),
        sa.Column("seen_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["type_code"], ["licenses_types.code"], name="fk_licenses_requests_type_code_licenses_types"),
        sa.ForeignKeyConstraint(
            ["issuer_code"], ["licenses_issuers.credit_code"], name="fk_licenses_requests_issuer_code_licenses_issuers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_requests"),
    )
    op.create_index("ix_licenses_requests_holder_hash", "licenses_requests", ["holder_hash"])
    op.create_index("ix_licenses_requests_queue", "licenses_requests", ["issuer_code", "state", "deadline"])
    op.create_table(
        "licenses_subscriptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("endpoint", sa.String(400), nullable=False),
        sa.Column("type_codes", sa.Text(), nullable=False),
        sa.Column("accessed", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_licenses_subscriptions"),
    )
    op.create_index("ix_licenses_subscriptions_client_id", "licenses_subscriptions", ["client_id"])


def downgrade() -> None:
    op.drop_table("licenses_subscriptions")
    op.drop_table("licenses_requests")
    op.drop_table("licenses_status_lists")
    with op.batch_alter_table("licenses_licences") as batch:
        batch.drop_index("ix_licenses_licences_file_state")
        batch.drop_constraint("uq_licenses_licences_status_entry", type_="unique")
        batch.drop_constraint("fk_licenses_licences_import_id_licenses_imports", type_="foreignkey")
        for column in ("status_index", "status_list", "file_state", "source_row", "import_id"):
            batch.drop_column(column)
    op.drop_table("licenses_imports")
