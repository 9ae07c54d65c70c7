// A terminal chat on one session: answers stream as they are written, posts print as cards.
// Ctrl-C during an answer stops it (chat:stop); Ctrl-C at the prompt quits; /regenerate asks
// for the last answer again (chat:regenerate: the old one stays, as a sibling).
import readline from "node:readline";
import { ask, regenerate } from "./client.mjs";

export async function interactive(socket, sessionId, { input = process.stdin, output = process.stdout, terminal } = {}) {
  // In a terminal, readline turns Ctrl-C into its SIGINT event (tests say terminal: true).
  const rl = readline.createInterface({ input, output, prompt: "> ", terminal: terminal ?? output.isTTY });
  let answering = false;
  rl.on("SIGINT", () => {
    if (answering) {
      socket.emit("chat:stop", { sessionId });
      output.write("\n[stopping]\n");
    } else {
      rl.close();
    }
  });
  output.write("Ask about the post, or ask for social posts. /regenerate writes the last answer again. Ctrl-C stops an answer; Ctrl-C again quits.\n");
  rl.prompt();
  let last = null; // the last exchange answered here
  for await (const line of rl) {
    const content = line.trim();
    if (!content) {
      rl.prompt();
      continue;
    }
    if (content === "/regenerate" && !last) {
      output.write("[nothing to regenerate yet]\n");
      rl.prompt();
      continue;
    }
    answering = true;
    const onToken = (t) => output.write(t);
    const result = content === "/regenerate"
      ? await regenerate(socket, sessionId, last, { onToken })
      : await ask(socket, sessionId, content, { onToken });
    answering = false;
    if (result.ack.ok) last = result.ack.messageId;
    if (!result.ack.ok) {
      output.write(`[${result.ack.error.code}] ${result.ack.error.message}\n`);
    } else if (result.terminal.name === "chat:social:generated") {
      output.write("\n");
      for (const post of result.terminal.payload.posts) {
        output.write(`--- ${post.platform} (${post.characterCount})\n${post.content}\n`);
      }
    } else if (result.terminal.name === "chat:error") {
      output.write(`\n[${result.terminal.payload.code}] ${result.terminal.payload.message}\n`);
    } else {
      output.write(result.terminal.payload.stopped ? "\n[stopped]\n" : "\n");
    }
    rl.prompt();
  }
}
