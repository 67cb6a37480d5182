// The product's side of the token-encryption tests, run with the real better-auth package.
//
//   node oracle.mjs NODE_MODULES_PARENT < requests.json > answers.json
//
// The secrets come from the environment exactly as the product's server reads them:
// `betterAuth()` builds its secret configuration from BETTER_AUTH_SECRET / BETTER_AUTH_SECRETS,
// with `account.encryptOAuthTokens` on. Requests are a JSON array of {op, value}:
//   encrypt / decrypt  symmetricEncrypt / symmetricDecrypt from "better-auth/crypto" with that
//                      secret configuration (the primitives)
//   write / read       setTokenUtil / decryptOAuthToken from "better-auth/oauth2" (what the
//                      product applies to the accessToken and refreshToken columns; `read`
//                      passes values that do not look encrypted through unchanged)
// The answer is a JSON array of {ok: string} or {error: message}, one per request, followed
// by {config: {...}}: the parsed secret configuration (versions, current, whether a legacy
// secret is set), never the secrets themselves. A configuration Better Auth refuses gives
// [{configError: message}] alone.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const root = resolve(process.argv[2]);
const require = createRequire(join(root, "package.json"));
const load = (name) => import(pathToFileURL(require.resolve(name)).href);

const { betterAuth } = await load("better-auth");
const { symmetricEncrypt, symmetricDecrypt } = await load("better-auth/crypto");
const { setTokenUtil, decryptOAuthToken } = await load("better-auth/oauth2");

let ctx;
try {
  const auth = betterAuth({
    baseURL: "http://127.0.0.1:9",
    account: { encryptOAuthTokens: true },
    telemetry: { enabled: false },
    logger: { disabled: true },
  });
  ctx = await auth.$context;
} catch (error) {
  // A secret configuration Better Auth refuses (BETTER_AUTH_SECRETS syntax).
  process.stdout.write(JSON.stringify([{ configError: String(error?.message ?? error) }]));
  process.exit(0);
}
const key = ctx.secretConfig;

const requests = JSON.parse(readFileSync(0, "utf8"));
const answers = [];
for (const { op, value } of requests) {
  try {
    let result;
    if (op === "encrypt") result = await symmetricEncrypt({ key, data: value });
    else if (op === "decrypt") result = await symmetricDecrypt({ key, data: value });
    else if (op === "write") result = await setTokenUtil(value, ctx);
    else if (op === "read") result = await decryptOAuthToken(value, ctx);
    else throw new Error(`unknown op ${op}`);
    answers.push({ ok: result });
  } catch (error) {
    answers.push({ error: String(error?.message ?? error) });
  }
}
answers.push({
  config:
    typeof key === "string"
      ? { mode: "single" }
      : {
          mode: "versioned",
          versions: [...key.keys.keys()],
          current: key.currentVersion,
          legacy: Boolean(key.legacySecret),
        },
});
process.stdout.write(JSON.stringify(answers));
