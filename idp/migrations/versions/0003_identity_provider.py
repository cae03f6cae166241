"""Identity provider: accounts, identity proofing, the embedded registry, clients, signing keys,
SSO sessions, codes, refresh tokens, revocations, logout deliveries and the matter catalogue.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idp_accounts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=True),
    sa.Column('mobile', sa.String(length=20), nullable=True),
    sa.Column('display_name', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locale', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idp_accounts')),
    sa.UniqueConstraint('mobile', name=op.f('uq_idp_accounts_mobile')),
    sa.UniqueConstraint('username', name=op.f('uq_idp_accounts_username'))
    )
    op.create_table('idp_clients',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('client_type', sa.String(length=12), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=True),
    sa.Column('token_endpoint_auth_method', sa.String(length=32), nullable=False),
    sa.Column('jwks', sa.Text(), nullable=True),
    sa.Column('redirect_uris', sa.Text(), nullable=False),
    sa.Column('grant_types', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.String(length=500), nullable=False),
    sa.Column('min_acr', sa.Integer(), nullable=False),
    sa.Column('first_party', sa.Boolean(), nullable=False),
    sa.Column('backchannel_logout_uri', sa.String(length=400), nullable=True),
    sa.Column('frontchannel_logout_uri', sa.String(length=400), nullable=True),
    sa.Column('post_logout_redirect_uris', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_idp_clients'))
    )
    op.create_table('idp_matters',
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('department', sa.String(length=100), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_idp_matters'))
    )
    op.create_table('idp_registry_people',
    sa.Column('resident_id_hash', sa.String(length=64), nullable=False),
    sa.Column('resident_id_masked', sa.String(length=24), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resident_id_hash', name=op.f('pk_idp_registry_people'))
    )
    op.create_table('idp_signing_keys',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('alg', sa.String(length=10), nullable=False),
    sa.Column('key_uri', sa.String(length=400), nullable=False),
    sa.Column('public_jwk', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('publish_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid', name=op.f('pk_idp_signing_keys'))
    )
    op.create_table('idp_token_revocations',
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_idp_token_revocations'))
    )
    with op.batch_alter_table('idp_token_revocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idp_token_revocations_expires_at'), ['expires_at'], unique=False)

    op.create_table('idp_authorization_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('redirect_uri', sa.String(length=400), nullable=False),
    sa.Column('scope', sa.String(length=500), nullable=False),
    sa.Column('nonce', sa.String(length=200), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=True),
    sa.Column('code_challenge_method', sa.String(length=10), nullable=True),
    sa.Column('acr', sa.Integer(), nullable=False),
    sa.Column('amr', sa.String(length=100), nullable=False),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claims', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('family_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['idp_accounts.id'], name=op.f('fk_idp_authorization_codes_account_id_idp_accounts')),
    sa.ForeignKeyConstraint(['client_id'], ['idp_clients.client_id'], name=op.f('fk_idp_authorization_codes_client_id_idp_clients')),
    sa.PrimaryKeyConstraint('code_hash', name=op.f('pk_idp_authorization_codes'))
    )
    op.create_table('idp_identity_proofing',
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('resident_id_hash', sa.String(length=64), nullable=False),
    sa.Column('resident_id_masked', sa.String(length=24), nullable=False),
    sa.Column('legal_name', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('location', sa.String(length=200), nullable=False),
    sa.Column('document', sa.String(length=64), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['idp_accounts.id'], name=op.f('fk_idp_identity_proofing_account_id_idp_accounts')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_idp_identity_proofing')),
    sa.UniqueConstraint('resident_id_hash', name=op.f('uq_idp_identity_proofing_resident_id_hash'))
    )
    op.create_table('idp_logout_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=300), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['idp_clients.client_id'], name=op.f('fk_idp_logout_deliveries_client_id_idp_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idp_logout_deliveries')),
    sa.UniqueConstraint('sid', 'client_id', 'channel', name='uq_idp_logout_deliveries_target')
    )
    with op.batch_alter_table('idp_logout_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idp_logout_deliveries_next_attempt_at'), ['next_attempt_at'], unique=False)

    op.create_table('idp_refresh_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('scope', sa.String(length=500), nullable=False),
    sa.Column('acr', sa.Integer(), nullable=False),
    sa.Column('amr', sa.String(length=100), nullable=False),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['idp_accounts.id'], name=op.f('fk_idp_refresh_tokens_account_id_idp_accounts')),
    sa.ForeignKeyConstraint(['client_id'], ['idp_clients.client_id'], name=op.f('fk_idp_refresh_tokens_client_id_idp_clients')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_idp_refresh_tokens'))
    )
    with op.batch_alter_table('idp_refresh_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_idp_refresh_tokens_family_id', ['family_id'], unique=False)

    op.create_table('idp_sessions',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amr', sa.String(length=100), nullable=False),
    sa.Column('acr', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ip', sa.String(length=45), nullable=False),
    sa.Column('user_agent', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['idp_accounts.id'], name=op.f('fk_idp_sessions_account_id_idp_accounts')),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_idp_sessions'))
    )
    with op.batch_alter_table('idp_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idp_sessions_account_id'), ['account_id'], unique=False)

    op.create_table('idp_session_clients',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['idp_clients.client_id'], name=op.f('fk_idp_session_clients_client_id_idp_clients')),
    sa.ForeignKeyConstraint(['sid'], ['idp_sessions.sid'], name=op.f('fk_idp_session_clients_sid_idp_sessions')),
    sa.PrimaryKeyConstraint('sid', 'client_id', name=op.f('pk_idp_session_clients'))
    )

    op.create_table('idp_consents',
    sa.Column('account_id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=500), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['idp_accounts.id'], name=op.f('fk_idp_consents_account_id_idp_accounts')),
    sa.ForeignKeyConstraint(['client_id'], ['idp_clients.client_id'], name=op.f('fk_idp_consents_client_id_idp_clients')),
    sa.PrimaryKeyConstraint('account_id', 'client_id', name=op.f('pk_idp_consents'))
    )

def downgrade() -> None:
    op.drop_table('idp_consents')
    op.drop_table('idp_session_clients')
    with op.batch_alter_table('idp_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_sessions_account_id'))

    op.drop_table('idp_sessions')
    with op.batch_alter_table('idp_refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_idp_refresh_tokens_family_id')

    op.drop_table('idp_refresh_tokens')
    with op.batch_alter_table('idp_logout_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_logout_deliveries_next_attempt_at'))

    op.drop_table('idp_logout_deliveries')
    op.drop_table('idp_identity_proofing')
    op.drop_table('idp_authorization_codes')
    with op.batch_alter_table('idp_token_revocations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_token_revocations_expires_at'))

    op.drop_table('idp_token_revocations')
    op.drop_table('idp_signing_keys')
    op.drop_table('idp_registry_people')
    op.drop_table('idp_matters')
    op.drop_table('idp_clients')
    op.drop_table('idp_accounts')
