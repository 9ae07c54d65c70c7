// POST /api/posts with only a URL: the page is fetched and its readable text and title become
// the post; private addresses are refused unless allowed; size and time are bounded.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { api, devToken } from "../lib/client.mjs";
import { startServer } from "./helpers/server.mjs";

const article = `<!doctype html><html><head><title>Why Rust servers are fast</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>Why Rust servers are fast</h1>
<p>Rust has no garbage collector, so latency stays flat under load. This matters for chat servers that hold many connections.</p>
<p>Tokio schedules tasks on a work-stealing runtime that keeps every core busy, and futures are small state machines.</p>
<p>The borrow checker prevents data races at compile time, which makes concurrent code easier to trust in production.</p>
</article><footer>Copyright 2026. All rights reserved. Subscribe to our newsletter.</footer></body></html>`;

let site;
let siteUrl;
before(async () => {
  site = http.createServer((req, res) => {
    if (req.url === "/article") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return res.end(article);
    }
    if (req.url === "/huge") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(`<html><body><p>${"word ".repeat(400_000)}</p></body></html>`);
    }
    if (req.url === "/slow") {
      res.writeHead(200, { "content-type": "text/html" });
      res.write("<html><body><p>Slow start.");
      return; // never finishes
    }
    if (req.url === "/image") {
      res.writeHead(200, { "content-type": "image/png" });
      return res.end(Buffer.alloc(100));
    }
    if (req.url === "/to-metadata") {
      res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" });
      return res.end();
    }
    if (req.url === "/to-article") {
      res.writeHead(301, { location: "/article" });
      return res.end();
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  siteUrl = `http://127.0.0.1:${site.address().port}`;
});
after(() => {
  site.closeAllConnections();
  site.close();
});

test("with the local address allowed, the page's readable text and title become the post", async () => {
  const server = await startServer({ env: { POST_FETCH_ALLOW: "127.0.0.1", POST_FETCH_MAX_BYTES: "100000", POST_FETCH_TIMEOUT_MS: "1500" } });
  try {
    const token = await devToken(server.url, "alice");
    const created = await api(server.url, token, "POST", "/api/posts", { url: `${siteUrl}/article` });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.title, "Why Rust servers are fast");
    assert.match(created.body.content, /Tokio schedules tasks on a work-stealing runtime/);
    assert.match(created.body.content, /borrow checker prevents data races/);
    assert.doesNotMatch(created.body.content, /newsletter|About/, "navigation and footer are left out");
    assert.match(created.body.summary, /^Rust has no garbage collector/);

    const redirected = await api(server.url, token, "POST", "/api/posts", { url: `${siteUrl}/to-article`, title: "Mine" });
    assert.equal(redirected.status, 201);
    assert.equal(redirected.body.title, "Mine", "a given title wins");

    const cases = [
      ["/huge", /larger than 100000 bytes/],
      ["/slow", /longer than/],
      ["/image", /not HTML or text/],
      ["/to-metadata", /169\.254\.169\.254 is a private or local address/],
      ["/missing", /answered 404/],
    ];
    for (const [path, message] of cases) {
      const started = Date.now();
      const res = await api(server.url, token, "POST", "/api/posts", { url: `${siteUrl}${path}` });
      assert.equal(res.status, 422, path);
      assert.equal(res.body.error.code, "INVALID_INPUT");
      assert.match(res.body.error.message, message, path);
      assert.ok(Date.now() - started < 5_000, `${path} took ${Date.now() - started} ms`);
    }
  } finally {
    await server.stop();
  }
});

test("by default, private and local addresses are refused before any request is made", async () => {
  const server = await startServer();
  try {
    const token = await devToken(server.url, "alice");
    let hits = 0;
    site.on("request", () => hits++);
    for (const url of [`${siteUrl}/article`, "http://localhost:9/x", "http://10.0.0.1/x", "http://[::1]:9/x", "http://169.254.169.254/latest"]) {
      const res = await api(server.url, token, "POST", "/api/posts", { url });
      assert.equal(res.status, 422, url);
      assert.match(res.body.error.message, /private or local address/, url);
    }
    assert.equal(hits, 0, "the local site was never contacted");
    const given = await api(server.url, token, "POST", "/api/posts", { url: `${siteUrl}/article`, title: "T", content: "Given text." });
    assert.equal(given.status, 201, "with content given, nothing is fetched");
  } finally {
    await server.stop();
  }
});
