// Hand-made JWTs for the security tests: any header, any claims, any key.
import crypto from "node:crypto";

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
export const now = () => Math.floor(Date.now() / 1000);

/** A token with `claims`, signed as `alg` says: HS256 with `key` as the secret, RS256 or EdDSA
 * with `key` as a private KeyObject, "none" unsigned. */
export function sign(claims, { alg = "HS256", key }) {
  const head = `${b64({ alg, typ: "JWT" })}.${b64(claims)}`;
  if (alg === "none") return `${head}.`;
  let signature;
  if (alg === "HS256") signature = crypto.createHmac("sha256", key).update(head).digest();
  else if (alg === "RS256") signature = crypto.sign("RSA-SHA256", Buffer.from(head), key);
  else if (alg === "EdDSA") signature = crypto.sign(null, Buffer.from(head), key);
  else throw new Error(`unsupported alg ${alg}`);
  return `${head}.${signature.toString("base64url")}`;
}
