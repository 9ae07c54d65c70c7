// The figures of answers that outlive their process (docs/benchmarks.md, "Answers that outlive
// their process"): how long from a process's death to the first continued token, and how long a
// rolling restart of three processes takes under load. Real processes (POSTCHAT_BIN: the release
// build), PostgreSQL, a redis-server of its own.
//   node client-demo/test/helpers/resume-bench.mjs [kills=3] [answers=40]
import { collectAnswer, connect, createSession, request } from "../../lib/client.mjs";
import { samplePost } from "./server.mjs";
import { startProcesses } from "./processes.mjs";
import { execFileSync } from "node:child_process";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const question = "How does Rust keep idle connections cheap and what does Tokio do?";
const ENV = { LOCAL_AI_PACING_MS: "100", RATE_LIMIT_MESSAGES_PER_MINUTE: "0", MAX_SOCKETS_PER_USER: "0", SHUTDOWN_GRACE_SECS: "120" };

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** Each answer's first continued token after its process was killed (`SIGKILL`) or told to stop
 * (`SIGTERM`: its answers handed over), seen by a watcher on another process. */
async function toFirstContinuedToken(answers, signal) {
  const cluster = await startProcesses(2, { env: ENV });
  try {
    const [a, b] = cluster.servers;
    const token = cluster.token("bench");
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    const firsts = new Map();
    let killed = 0;
    onB.on("chat:stream:status", (s) => {
      if (s.state === "resumed") firsts.set(s.messageId, { resumedAt: Date.now(), seq: s.seq });
    });
    onB.on("chat:stream:token", (t) => {
      const f = firsts.get(t.messageId);
      if (killed && f && !f.tokenAt && t.seq > f.seq) f.tokenAt = Date.now();
    });
    for (let i = 0; i < answers; i++) {
      const { session } = await createSession(a.url, token, samplePost);
      await request(onB, "chat:join", { sessionId: session.id });
      await request(onA, "chat:message", { sessionId: session.id, content: question });
    }
    await sleep(1_500);
    killed = Date.now();
    if (signal === "SIGKILL") a.process.kill("SIGKILL");
    else await a.stop();
    const deadline = Date.now() + 60_000;
    while ([...firsts.values()].filter((f) => f.tokenAt).length < answers && Date.now() < deadline) await sleep(100);
    onB.close();
    return [...firsts.values()].filter((f) => f.tokenAt).map((f) => f.tokenAt - killed);
  } finally {
    await cluster.stop();
  }
}

/** Three processes, `users` users asking one question after another on each; each process in
 * turn is stopped (SIGTERM) and started again. The time each drain took, the restart's total,
 * and how the answers were stored (a watcher whose process restarts loses the session's room:
 * the database says how every answer ended). */
async function rollingRestart(users) {
  const cluster = await startProcesses(3, { env: ENV });
  try {
    const token = cluster.token("bench");
    let over = false;
    const outcomes = {};
    const loop = async (i) => {
      while (!over) {
        const server = cluster.servers[i % 3];
        try {
          const socket = await connect(server.url, token);
          const { session } = await createSession(server.url, token, samplePost);
          const watcher = await connect(cluster.servers[(i + 1) % 3].url, token);
          await request(watcher, "chat:join", { sessionId: session.id });
          while (!over && socket.connected) {
            const answer = collectAnswer(watcher, { awaitId: true });
            const ack = await request(socket, "chat:message", { sessionId: session.id, content: question });
            if (!ack.ok) {
              answer.cancel();
              break;
            }
            answer.setMessageId(ack.messageId);
            const events = await Promise.race([answer.finished, sleep(60_000).then(() => [{ name: "none" }])]);
            const end = events.at(-1);
            const key = end.name === "chat:error" ? end.payload.code : end.name;
            outcomes[key] = (outcomes[key] ?? 0) + 1;
          }
          socket.close();
          watcher.close();
        } catch {
          await sleep(200);
        }
      }
    };
    const loops = Array.from({ length: users }, (_, i) => loop(i));
    await sleep(5_000);
    const started = Date.now();
    const drains = [];
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      await cluster.servers[i].stop();
      drains.push(Date.now() - t0);
      cluster.servers[i] = await cluster.startOne();
    }
    const total = Date.now() - started;
    await sleep(5_000);
    over = true;
    await Promise.race([Promise.all(loops), sleep(20_000)]);
    await sleep(15_000);
    const sql = "select coalesce(json_object_agg(status, n), '{}') from (select status, count(*) n from messages group by status) s";
    const stored = JSON.parse(execFileSync("psql", [cluster.databaseUrl, "-Atc", sql], { encoding: "utf8" }));
    return { drains, total, stored };
  } finally {
    await cluster.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const kills = Number(process.argv[2] ?? 3);
  const answers = Number(process.argv[3] ?? 40);
  for (const signal of ["SIGKILL", "SIGTERM"]) {
    const samples = [];
    for (let i = 0; i < kills; i++) samples.push(...(await toFirstContinuedToken(answers, signal)));
    samples.sort((x, y) => x - y);
    const figures = { answers: samples.length, of: kills * answers, p50: percentile(samples, 50), p99: percentile(samples, 99), max: samples.at(-1) };
    console.log(JSON.stringify({ [`${signal} to the first continued token (ms)`]: figures }));
  }
  console.log(JSON.stringify({ rollingRestart: await rollingRestart(30) }));
  process.exit(0);
}
