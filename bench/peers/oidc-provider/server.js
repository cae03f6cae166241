// The peer of bench/token.py: panva's oidc-provider issuing client_credentials
// tokens as RFC 9068 JWT access tokens signed ES256, the same class of token as
// Hallmark's. Nothing is stored per token: oidc-provider keeps only opaque
// tokens in its adapter; a JWT access token is signed and returned (the
// in-memory adapter is the default and holds nothing here). The signing key is
// a software P-256 key generated at start, in process (node:crypto).
//
// Two processes (node:cluster) share the port, like `hallmark serve --workers 2`.
//
// Environment: PORT (required), CLIENT_ID, CLIENT_SECRET, SCOPE (the client's
// scope, also the resource server's), WORKERS (default 2), ACCESS_TOKEN_FORMAT
// (jwt, the default; opaque: oidc-provider's default, stored in the adapter).
//
// A token request: POST /token, client_secret_basic, grant_type=client_credentials
// (with or without scope). The resource (audience) defaults to RESOURCE.

import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is required');
  process.exit(2);
}
const workers = Number(process.env.WORKERS || 2);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'urn:hallmark:bench:api';

if (cluster.isPrimary) {
  // One key for every worker, as our workers share the HSM key.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', use: 'sig', alg: 'ES256' };
  for (let n = 0; n < workers; n += 1) {
    cluster.fork({ PEER_JWK: JSON.stringify(jwk) });
  }
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
  });
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { default: Provider } = await import('oidc-provider');
  const scope = process.env.SCOPE || 'bench:read';
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID || 'bench-client',
      client_secret: process.env.CLIENT_SECRET || 'bench-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256', // the only key it has
      scope,
    }],
    jwks: { keys: [JSON.parse(process.env.PEER_JWK)] },
    scopes: [scope],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope,
          audience: RESOURCE,
          accessTokenTTL: 600, // ten minutes, as ours
          accessTokenFormat: process.env.ACCESS_TOKEN_FORMAT || 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    cookies: { keys: ['bench-cookie-key-not-used-by-client-credentials'] },
  });
  provider.listen(port, '127.0.0.1');
}
