// A fake OpenAI-compatible server on 127.0.0.1 that behaves like the real ones: real SSE (with
// `finish_reason` and usage in the last chunk), whole completions when `stream` is false, 429
// with `Retry-After`, context-length refusals, JSON mode, plain-text replies, and llama.cpp's
// refusal of `json_schema`. What each request is (answer, classifier, posts, post, shorten,
// summary, title) is read from its system prompt; the scenario from a word in the last user
// message:
//   normal (default) · slow · flood (5 MB: set ANSWER_MAX_TOKENS=5000000) · stall · malformed · not-sse · status-429 · status-500 ·
//   busy-once (one 429 with Retry-After: 1, then an answer) · busy-long (Retry-After: 60) ·
//   empty-once / empty-always (a stream with no text) · long-answer (cut at max_tokens) ·
//   posts-garbage (posts as prose, not JSON) · posts-partial (JSON with the first post only)
// Options: `tokenDelayMs`; `contextWindowChars` (refuse prompts longer than this, as OpenAI's
// context_length_exceeded); `schemaRefused` (answer json_schema requests as llama.cpp does);
// `serves: { server, window }`: a self-hosted server with a window of `window` tokens (a token
// taken as 4 characters of the messages' JSON), which it reports as that server does (`llama.cpp`:
// /props; `vllm`: /v1/models; `ollama`: /api/show; `lmstudio`: /api/v0/models/{model};
// `llama-cpp-python`: nowhere) and refuses prompts over with that server's own message;
// `readMsPerToken`: how long reading a prompt takes before the first chunk.
// A request whose last message is the assistant's (a prefill: llama.cpp's server continues it;
// vLLM with `continue_final_message`), or whose last user message asks to continue the
// assistant's reply above it, continues that reply: the scenario's words after those it holds
// (`refuse-continuation` in the question: such a request is refused).
// It records each request's kind and body (`continued`: the reply it was asked to continue),
// and whether the client closed the connection early.
import http from "node:http";

/** How the server asks a provider that takes no prefill to continue a reply (ai/continuation.rs). */
const CONTINUE_INSTRUCTION = "Your reply above was cut off.";
const PLATFORMS = ["twitter", "linkedin", "bluesky", "mastodon", "threads", "facebook", "instagram"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function kindOf(body) {
  const system = body.messages?.find((m) => m.role === "system")?.content ?? "";
  if (body.response_format?.type === "json_schema" || system.startsWith("Classify the user's message")) return "classifier";
  if (system.includes("[[task]]\nsocial_posts")) return "posts";
  if (system.includes("[[task]]\nsocial_post")) return "post";
  if (system.includes("[[task]]\nshorten")) return "shorten";
  if (system.includes("[[task]]\nsummary")) return "summary";
  if (system.includes("[[task]]\ntitle")) return "title";
  return "answer";
}

function chunk(model, content, finishReason = null) {
  return {
    id: "chatcmpl-fake", object: "chat.completion.chunk", created: 1, model,
    choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finishReason }],
  };
}

export async function startFakeOpenAI({ tokenDelayMs = 5, contextWindowChars = 0, schemaRefused = false, serves = null, readMsPerToken = 0 } = {}) {
  const requests = [];
  const seen = new Map();
  const server = http.createServer(async (req, res) => {
    let raw = "";
    for await (const part of req) raw += part;
    const body = raw ? JSON.parse(raw) : {};
    if (!req.url.endsWith("/chat/completions")) {
      requests.push({ path: req.url, method: req.method, body, kind: "discovery" });
      const [status, reply] = discovery(serves, req.method, req.url, body);
      res.writeHead(status, { "content-type": "application/json" });
      return res.end(JSON.stringify(reply));
    }
    const kind = kindOf(body);
    const record = { path: req.url, body, kind, closedEarly: false, finished: false };
    requests.push(record);
    res.on("close", () => { if (!record.finished) record.closedEarly = true; });
    const messages = body.messages ?? [];
    const asked = messages.filter((m) => m.role === "user" && !m.content.startsWith(CONTINUE_INSTRUCTION));
    const lastUser = asked.at(-1)?.content ?? "";
    const instructed = messages.at(-1)?.role === "user" && messages.at(-1).content.startsWith(CONTINUE_INSTRUCTION);
    const begun = messages.at(instructed ? -2 : -1);
    record.continued = begun?.role === "assistant" ? begun.content : null;
    const scenario = ["flood", "slow", "stall", "malformed", "not-sse", "status-429", "status-500", "busy-once", "busy-long",
      "empty-once", "empty-always", "long-answer", "posts-garbage", "posts-partial"].find((s) => lastUser.includes(s)) ?? "normal";
    const model = body.model ?? "fake";
    const times = (seen.get(`${kind}:${lastUser}`) ?? 0) + 1;
    seen.set(`${kind}:${lastUser}`, times);
    const refuse = (status, error, headers = {}) => {
      record.finished = true;
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify({ error }));
    };

    if (record.continued !== null && lastUser.includes("refuse-continuation")) {
      return refuse(400, { message: "continuation refused", type: "invalid_request_error" });
    }
    if (schemaRefused && body.response_format?.type === "json_schema") {
      // llama.cpp's server (llama-cpp-python's too) takes only text and json_object.
      return refuse(500, { message: "1 validation error: response_format.type Input should be 'text' or 'json_object'", type: "server_error" });
    }
    const promptTokens = Math.ceil(JSON.stringify(body.messages).length / 4);
    if (serves && promptTokens + (body.max_tokens ?? 0) > serves.window) {
      record.finished = true;
      if (serves.server === "llama-cpp-python" && body.stream) {
        // Its streams swallow the error: a 200 that ends without an event.
        res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
        return res.end();
      }
      const [status, error] = overWindow(serves, promptTokens + (body.max_tokens ?? 0));
      res.writeHead(status, { "content-type": "application/json" });
      return res.end(JSON.stringify(error));
    }
    if (readMsPerToken) await sleep(promptTokens * readMsPerToken);
    if (contextWindowChars && JSON.stringify(body.messages).length > contextWindowChars) {
      return refuse(400, { message: `This model's maximum context length is ${contextWindowChars} characters.`, type: "invalid_request_error", code: "context_length_exceeded" });
    }
    if (scenario === "status-429" || scenario === "busy-long" || (scenario === "busy-once" && times === 1)) {
      const wait = scenario === "busy-long" ? "60" : "1";
      return refuse(429, { message: "Rate limit reached. Please try again in 2s.", type: "rate_limit_error" }, { "retry-after": wait });
    }
    if (scenario === "status-500") {
      record.finished = true;
      res.writeHead(500, { "content-type": "text/plain" });
      return res.end("upstream exploded");
    }

    const { text, finishReason } = replyText(kind, body, lastUser, scenario, times);
    if (!body.stream) {
      record.finished = true;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({
        id: "chatcmpl-fake", object: "chat.completion", created: 1, model,
        choices: [{ index: 0, message: { role: "assistant", content: text ?? "Hello from the model." }, finish_reason: finishReason }],
        usage: { prompt_tokens: 30, completion_tokens: 8, total_tokens: 38 },
      }));
    }
    if (scenario === "not-sse") {
      record.finished = true;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ id: "x", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "not a stream" }, finish_reason: "stop" }] }));
    }
    await streamWords(res, record, model, text, finishReason, scenario, tokenDelayMs, record.continued);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

/** A discovery request's answer, as the server `serves` names answers it: [status, JSON]. */
function discovery(serves, method, url, body) {
  const notFound = [404, { error: { message: "File Not Found", type: "not_found_error" } }];
  const { server, window } = serves ?? {};
  if (method === "GET" && url === "/props" && server === "llama.cpp") {
    return [200, { default_generation_settings: { n_ctx: window, params: { n_predict: -1 } }, total_slots: 1, chat_template: "..." }];
  }
  if (method === "GET" && url === "/v1/models") {
    const entry = server === "vllm" ? { id: "fake-model", object: "model", owned_by: "vllm", max_model_len: window } : { id: "fake-model", object: "model", owned_by: "me" };
    return [200, { object: "list", data: [entry] }];
  }
  if (method === "POST" && url === "/api/show" && server === "ollama") {
    return [200, { parameters: `num_ctx ${window}\nstop "<|eot_id|>"`, model_info: { "general.architecture": "llama", "llama.context_length": 131072 } }];
  }
  if (method === "GET" && url === "/api/v0/models/fake-model" && server === "lmstudio") {
    return [200, { id: "fake-model", object: "model", type: "llm", state: "loaded", max_context_length: 32768, loaded_context_length: window }];
  }
  return notFound;
}

/** The refusal of a prompt of `tokens` over the window, in the words of the server `serves` names. */
function overWindow({ server, window }, tokens) {
  switch (server) {
    case "llama.cpp": return [400, { error: { code: 400, message: `request (${tokens} tokens) exceeds the available context size (${window} tokens), try increasing it`, type: "exceed_context_size_error", n_prompt_tokens: tokens, n_ctx: window } }];
    // What llama-cpp-python 0.3 answers a whole completion (seen from the CI's real model).
    case "llama-cpp-python": return [400, { error: { message: `This model's maximum context length is ${window} tokens. However, you requested ${tokens} tokens (${tokens - 100} in the messages, 100 in the completion). Please reduce the length of the messages or completion.`, type: "invalid_request_error", param: "messages", code: "context_length_exceeded" } }];
    case "lmstudio": return [400, { error: `Trying to keep the first ${tokens} tokens when context the overflows. However, the model is loaded with context length of only ${window} tokens, which is not enough.` }];
    default: return [400, { object: "error", message: `This model's maximum context length is ${window} tokens. However, you requested ${tokens} tokens.`, type: "BadRequestError", code: 400 }];
  }
}

/** What the model writes for a request of `kind`, and why it stopped. */
function replyText(kind, body, lastUser, scenario, times) {
  const system = body.messages?.find((m) => m.role === "system")?.content ?? "";
  const stop = (text) => ({ text, finishReason: "stop" });
  switch (kind) {
    case "classifier": {
      const named = [...lastUser.matchAll(/\b(twitter|linkedin|bluesky|mastodon|threads|facebook|instagram)\b/gi)].map((m) => m[1].toLowerCase());
      if (lastUser.includes("classifier-garbage")) return stop("I think it is a question");
      const decision = JSON.stringify({ intent: "social_post", platforms: named });
      // Without a response format, a small model wraps its JSON in prose.
      return stop(body.response_format ? decision : `Sure! ${decision}`);
    }
    case "posts": {
      const wanted = [...system.matchAll(/^(twitter|linkedin|bluesky|mastodon|threads|facebook|instagram) \(limit/gm)].map((m) => m[1]);
      if (scenario === "posts-garbage") return stop("Here are some lovely posts for you!");
      const posts = wanted.map((platform) => ({
        platform,
        content: `A ${platform} post about the article. ${"Very long. ".repeat(platform === "twitter" ? 60 : 1)}`,
        hashtags: ["rust", "#chat"],
      }));
      return stop(JSON.stringify({ posts: scenario === "posts-partial" ? posts.slice(0, 1) : posts }));
    }
    case "post": {
      const platform = PLATFORMS.find((p) => system.toLowerCase().includes(`[[platform]]\n${p === "twitter" ? "x (twitter)" : p}`)) ?? "unknown";
      return stop(`Here is your post:\nPlain ${platform} post about Tokio. #rust`);
    }
    case "shorten": {
      const platform = system.match(/\[\[platform\]\]\n(\w+)/)?.[1] ?? "unknown";
      return stop(`Short ${platform} post.`);
    }
    case "summary": return stop("They talked about Rust.");
    case "title": return stop("A fake title");
    default:
      if (scenario === "empty-always" || (scenario === "empty-once" && times === 1)) return stop("");
      if (scenario === "long-answer") return { text: "This answer goes on and on and", finishReason: "length" };
      return stop(null); // the scenario's words
  }
}

/** Streams `text` (or, for answers, the scenario's words) as SSE chunks, usage last. */
async function streamWords(res, record, model, text, finishReason, scenario, tokenDelayMs, continued) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const send = (data) => res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
  let words = text !== null
    ? (text.match(/\S*\s*/g) ?? []).filter(Boolean)
    : scenario === "slow" ? Array.from({ length: 40 }, (_, i) => `w${i} `)
    // 4000 words, 4.98 MB: under ANSWER_MAX_TOKENS=5000000 in bytes, so nothing is counted.
    : scenario === "flood" ? Array.from({ length: 4000 }, (_, i) => `${String(i).padStart(5, "0")}${"x".repeat(1240)} `)
    : ["Hello ", "from ", "the ", "model."];
  if (continued !== null) {
    // What follows the reply begun (nothing when it wrote something else).
    const whole = words.join("");
    words = whole.startsWith(continued) ? (whole.slice(continued.length).match(/\S*\s*/g) ?? []).filter(Boolean) : [];
  }
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
  send(chunk(model, null, finishReason));
  send({ ...chunk(model, null), choices: [], usage: { prompt_tokens: 100, completion_tokens: words.length, total_tokens: 100 + words.length } });
  send("[DONE]");
  record.finished = true;
  res.end();
}
