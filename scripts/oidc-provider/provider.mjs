// A local OpenID Provider for testing the console's OpenID Connect sign-in: panva's certified oidc-provider,
// with the clients and users of a JSON file, its development login and consent pages (scriptable: any login
// name of a configured user, any password), and a fresh RSA signing key each start.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"issuer": "http://127.0.0.1:PORT", "port": PORT,
//          "clients": [oidc-provider client metadata, e.g. {"client_id", "client_secret", "redirect_uris"}],
//          "claims": {"SCOPE": ["CLAIM", ...]},            (which scope releases which claims)
//          "users": {"LOGIN": {"CLAIM": VALUE, ...}},       (LOGIN is also the user's `sub`)
//          "test_hooks": false}
// With test_hooks, POST /__test/next-id-token {"id_token": "..."} makes the next token response carry that ID
// token instead of its own: how a test hands the relying party a genuine token issued to another client.
// Prints "listening ISSUER" on stdout once it serves.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = config.users ?? {};
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `test-${Date.now()}`, alg: 'RS256', use: 'sig' };

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: { openid: ['sub'], ...(config.claims ?? {}) },
  // Claims the scopes release go into the ID token too (as most enterprise IdPs can be set to do): the
  // relying party maps them from the one signed, audience-bound document.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = users[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ ...claims, sub: id }) };
  },
});

let nextIdToken = null;
if (config.test_hooks) {
  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/__test/next-id-token') {
      let body = '';
      for await (const chunk of ctx.req) body += chunk;
      nextIdToken = JSON.parse(body).id_token;
      ctx.status = 204;
      return;
    }
    await next();
    if (nextIdToken && ctx.path === '/token' && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: nextIdToken };
      nextIdToken = null;
    }
  });
}

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${config.issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
