// A real OIDC provider on 127.0.0.1 for the authn end-to-end tests:
// oauth2-mock-server (discovery, JWKS, token endpoint, signing with `jose`),
// plus two test hooks a real IdP has in other forms:
//   POST /_token  {"sub": "...", "aud": "...", "kid": "..."}  -> a signed JWT
//   POST /_rotate {"kid": "..."}  -> a new RS256 signing key in the JWKS
// Usage: node idp.mjs PORT   (prints "ready <issuer>" when listening)
import http from "node:http";
import { OAuth2Server } from "oauth2-mock-server";

const port = Number(process.argv[2] || 9400);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256", { kid: "idp-1" });
await server.start(port, "127.0.0.1");
const issuer = server.issuer.url;

// The hooks listen on PORT+1, so the provider's own routes stay untouched.
const hooks = http.createServer(async (req, res) => {
  let body = "";
  for await (const chunk of req) body += chunk;
  const args = body ? JSON.parse(body) : {};
  try {
    if (req.method === "POST" && req.url === "/_token") {
      const token = await server.issuer.buildToken({
        kid: args.kid,
        expiresIn: args.expiresIn ?? 600,
        scopesOrTransform: (header, payload) => {
          payload.sub = args.sub ?? "alice";
          payload.aud = args.aud ?? "shop";
        },
      });
      res.writeHead(200, { "content-type": "text/plain" }).end(token);
    } else if (req.method === "POST" && req.url === "/_rotate") {
      const jwk = await server.issuer.keys.generate("RS256", { kid: args.kid });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ kid: jwk.kid }));
    } else {
      res.writeHead(404).end();
    }
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
hooks.listen(port + 1, "127.0.0.1", () => console.log(`ready ${issuer}`));
const stop = async () => { hooks.close(); await server.stop(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
