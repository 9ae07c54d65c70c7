// The Node demo's --interactive mode in a real terminal-like pipe: a question streams back,
// Ctrl-C (SIGINT to readline) during an answer stops it, and Ctrl-C at the prompt quits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { api, connect, createSession, devToken } from "../lib/client.mjs";
import { interactive } from "../lib/interactive.mjs";
import { useServer, samplePost } from "./helpers/server.mjs";

const ctx = useServer({ env: { LOCAL_AI_PACING_MS: "100" } });

test("--interactive streams answers, regenerates one, stops one on Ctrl-C, and quits on Ctrl-C at the prompt", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const input = new PassThrough();
  const output = new PassThrough();
  let printed = "";
  output.on("data", (d) => (printed += d));
  const done = interactive(socket, session.id, { input, output, terminal: true });
  const waitFor = async (pattern) => {
    for (let i = 0; i < 200 && !pattern.test(printed); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(printed, pattern);
  };
  input.write("/regenerate\r");
  await waitFor(/\[nothing to regenerate yet\]/);
  input.write("What does Tokio do?\r");
  await waitFor(/keeps every core busy\.\n/);
  input.write("/regenerate\r");
  await waitFor(/keeps every core busy\.\n[^]*keeps every core busy\.\n/);
  const tree = (await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages?all=true`)).body.messages;
  assert.deepEqual(tree.map((m) => [m.userMessage, m.siblingIndex, m.siblingCount]), [
    ["What does Tokio do?", 0, 2],
    ["What does Tokio do?", 1, 2],
  ], "/regenerate answered the same message again, beside the first answer");
  input.write("How does Rust keep idle connections cheap and what does Tokio do?\r");
  await waitFor(/Real-time chat needs/); // the second answer has begun
  input.write("\x03"); // Ctrl-C while answering
  await waitFor(/\[stopped\]/);
  assert.doesNotMatch(printed, /Real-time chat[^\n]*work-stealing runtime that keeps every core busy\.\n/, "the second answer was cut short");
  input.write("\x03"); // Ctrl-C at the prompt
  await done;
  socket.close();
});
