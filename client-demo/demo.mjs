#!/usr/bin/env node
// The postchat tour: get a token, create a post and a session over HTTP, ask a question and
// print the answer as it streams, then ask for social posts and print them.
//
//   node demo.mjs [serverUrl]                 (default http://127.0.0.1:3000)
//   node demo.mjs --interactive [serverUrl]   a terminal chat; /regenerate writes the last answer again; Ctrl-C stops an answer, or quits
//   TOKEN=<jwt> node demo.mjs <url>           (outside dev mode, bring your own token)
import { ask, connect, createSession, devToken } from "./lib/client.mjs";
import { samplePost } from "./lib/sample-post.mjs";
import { interactive } from "./lib/interactive.mjs";

const args = process.argv.slice(2);
const chat = args.includes("--interactive");
const baseUrl = args.find((a) => !a.startsWith("--")) ?? process.env.SERVER_URL ?? "http://127.0.0.1:3000";
const token = process.env.TOKEN ?? (await devToken(baseUrl, "demo"));

const { session } = await createSession(baseUrl, token, samplePost);
console.log(`session ${session.id}: ${session.title}\n`);

const socket = await connect(baseUrl, token);
if (chat) {
  await interactive(socket, session.id);
  process.exit(0);
}

const question = "How does Rust keep idle connections cheap?";
console.log(`> ${question}`);
const answer = await ask(socket, session.id, question, { onToken: (t) => process.stdout.write(t) });
console.log(`\n[${answer.terminal.name}, ${answer.tokens.length} tokens]\n`);

const request = "Write a tweet and a LinkedIn post about this article";
console.log(`> ${request}`);
const social = await ask(socket, session.id, request);
if (social.terminal?.name !== "chat:social:generated") {
  console.error("unexpected:", social.terminal ?? social.ack);
  process.exit(1);
}
for (const post of social.terminal.payload.posts) {
  console.log(`--- ${post.platform} (${post.characterCount} characters)`);
  console.log(post.content);
}
socket.close();
