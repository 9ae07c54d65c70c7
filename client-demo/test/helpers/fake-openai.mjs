// A fake OpenAI-compatible server on 127.0.0.1 speaking real SSE, so the server's real HTTP
// client path runs. The scenario is picked by a word in the last user message:
//   normal (default) · slow · stall · malformed · not-sse · status-429 · status-500
// It records each request's body and whether the client closed the connection mid-answer.
import http from "node:http";

function chunk(model, content, extra = {}) {
  return {
    id: "chatcmpl-fake",
    object: "chat.completion.chunk",
    created: 1,
    model,
    choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: null }],
    ...extra,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startFakeOpenAI({ tokenDelayMs = 5 } = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const part of req) body += part;
    const json = body ? JSON.parse(body) : {};
    const record = { path: req.url, body: json, closedEarly: false, finished: false };
    requests.push(record);
    res.on("close", () => {
      if (!record.finished) record.closedEarly = true;
    });
    const lastUser = [...(json.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
    const text = typeof lastUser === "string" ? lastUser : JSON.stringify(lastUser);
    const scenario = ["flood", "slow", "stall", "malformed", "not-sse", "status-429", "status-500"].find((s) => text.includes(s)) ?? "normal";
    const model = json.model ?? "fake";

    if (scenario === "status-429") {
      res.writeHead(429, { "content-type": "application/json", "retry-after": "0" });
      return res.end(JSON.stringify({ error: { message: "Rate limit reached. Please try again in 2s.", type: "rate_limit_error", param: null, code: null } }));
    }
    if (scenario === "status-500") {
      res.writeHead(500, { "content-type": "text/plain" });
      return res.end("upstream exploded");
    }
    if (!json.stream && json.response_format?.type === "json_schema") {
      // The intent classifier.
      record.kind = "classifier";
      record.finished = true;
      const named = [...text.matchAll(/\b(twitter|linkedin|bluesky|mastodon|threads|facebook|instagram)\b/gi)].map((m) => m[1].toLowerCase());
      const reply = text.includes("classifier-garbage")
        ? "I think it is a question"
        : JSON.stringify({ intent: "social_post", platforms: named });
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({
        id: "c", object: "chat.completion", created: 1, model,
        choices: [{ index: 0, message: { role: "assistant", content: reply }, finish_reason: "stop" }],
        usage: { prompt_tokens: 30, completion_tokens: 8, total_tokens: 38 },
      }));
    }
    if (!json.stream) {
      // A whole completion (social posts, summaries): echo back JSON posts for the platforms named.
      const platforms = [...text.matchAll(/\b(twitter|linkedin|bluesky|mastodon|threads|facebook|instagram)\b/g)].map((m) => m[1]);
      const system = json.messages?.find((m) => m.role === "system")?.content ?? "";
      const wanted = [...system.matchAll(/^(twitter|linkedin|bluesky|mastodon|threads|facebook|instagram) \(limit/gm)].map((m) => m[1]);
      const posts = (wanted.length ? wanted : platforms).map((platform) => ({
        platform,
        content: `A ${platform} post about the article. ${"Very long. ".repeat(platform === "twitter" ? 60 : 1)}`,
        hashtags: ["rust", "#chat"],
      }));
      const allText = JSON.stringify(json.messages ?? []);
      let content = JSON.stringify({ posts });
      if (system.includes("Summarize")) content = "They talked about Rust.";
      else if (text.includes("too long")) content = JSON.stringify({ posts: posts.map((p) => ({ ...p, content: `Short ${p.platform} post.` })) });
      else if (allText.includes("posts-garbage") && !text.includes("not the JSON")) content = "Here are some lovely posts for you!";
      record.kind = system.includes("Summarize") ? "summary" : "posts";
      record.finished = true;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({
        id: "chatcmpl-fake", object: "chat.completion", created: 1, model,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
        usage: { prompt_tokens: 120, completion_tokens: 40, total_tokens: 160 },
      }));
    }
    if (scenario === "not-sse") {
      record.finished = true;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ id: "x", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "not a stream" } }] }));
    }

    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const send = (data) => res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
    const words =
      scenario === "slow" ? Array.from({ length: 40 }, (_, i) => `w${i} `)
      : scenario === "flood" ? Array.from({ length: 4000 }, (_, i) => `${String(i).padStart(5, "0")}${"x".repeat(2000)} `)
      : ["Hello ", "from ", "the ", "model."];
    const delay = scenario === "slow" ? 100 : scenario === "flood" ? 0 : tokenDelayMs;
    for (const [i, word] of words.entries()) {
      if (res.destroyed) return;
      send(chunk(model, word));
      if (delay > 0 || i % 50 === 0) await sleep(delay);
      if (scenario === "stall" && i === 2) return; // never another byte
      if (scenario === "malformed" && i === 1) {
        send("{this is not json");
        record.finished = true;
        return res.end();
      }
      if (i === 0) send(chunk(model, "")); // an empty chunk, to be skipped
    }
    send({ ...chunk(model, null), choices: [], usage: { prompt_tokens: 100, completion_tokens: words.length, total_tokens: 100 + words.length } });
    send("[DONE]");
    record.finished = true;
    res.end();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}
