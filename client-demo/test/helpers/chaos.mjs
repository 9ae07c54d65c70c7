// The project's own chaos run: three real processes on one PostgreSQL and one redis-server
// (reached through a proxy that can add latency), under load, while a schedule injects every
// fault docs/cluster.md promises to survive. Every answer is checked on its sender and on a
// watcher on another process: exactly one terminal event, nothing of it after that, tokens
// gapless (an answer another process continued goes on from the `seq` its `resumed` status
// names, and its end's content is the tokens kept), the stored status and text agreeing with
// what the sockets saw.
//
//   node test/helpers/chaos.mjs [seconds]      (600 for the run in docs/benchmarks.md)
// client-demo/test/chaos.test.mjs runs it for every fault once in CI.
import net from "node:net";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createSession, connect, request } from "../../lib/client.mjs";
import { samplePost } from "./server.mjs";
import { freePort, startProcesses } from "./processes.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TERMINALS = ["chat:stream:end", "chat:social:generated", "chat:error"];
const FAKETIME = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"].find((p) => existsSync(p));

/** A TCP proxy to `port` that delays every chunk by `delay` ms, in order: { port, setDelay, close }. */
export async function latencyProxy(targetPort) {
  let delay = 0;
  const open = new Set();
  const forward = (from, to) => {
    const queue = [];
    let timer = null;
    const drain = () => {
      timer = null;
      while (queue.length && queue[0].at <= Date.now()) to.write(queue.shift().data);
      if (queue.length) timer = setTimeout(drain, queue[0].at - Date.now());
    };
    from.on("data", (data) => {
      const at = Math.max(Date.now() + delay, queue.at(-1)?.at ?? 0);
      queue.push({ at, data });
      if (!timer) timer = setTimeout(drain, at - Date.now());
    });
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const close = () => [client, upstream].forEach((s) => (s.destroy(), open.delete(s)));
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("close", close);
      s.on("error", close);
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    port,
    setDelay: (ms) => (delay = ms),
    close: () => (open.forEach((s) => s.destroy()), new Promise((r) => server.close(r))),
  };
}

/** One user: a session, a sender socket on process `home`, a watcher on the next one. */
class User {
  constructor(run, index) {
    Object.assign(this, { run, index, sockets: [], answers: [] });
  }

  async start() {
    this.token = this.run.cluster.token(`chaos${this.index}`);
    this.session = (await createSession(this.run.url(0), this.token, samplePost)).session;
    this.sender = await this.open(this.index % 3, "sender");
    this.watcher = await this.open((this.index + 1) % 3, "watcher");
  }

  /** A socket on process `at` that has joined the session; every event recorded. */
  async open(at, role) {
    for (;;) {
      try {
        const socket = await connect(this.run.url(at), this.token);
        const record = { socket, role, at, events: [], opened: Date.now(), closed: null };
        socket.onAny((name, payload) => record.events.push({ name, payload, at: Date.now() }));
        socket.on("disconnect", () => (record.closed ??= Date.now()));
        const joined = await request(socket, "chat:join", { sessionId: this.session.id }, 5_000);
        if (!joined.ok) throw new Error(JSON.stringify(joined));
        this.sockets.push(record);
        return record;
      } catch {
        if (this.run.over) return null;
        await sleep(500);
      }
    }
  }

  /** Sends messages one after another until the run is over. */
  async loop() {
    for (let n = 0; !this.run.over; n++) {
      if (this.sender?.closed) this.sender = await this.open(this.index % 3, "sender");
      if (this.watcher?.closed) this.watcher = await this.open((this.index + 1) % 3, "watcher");
      if (!this.sender) return;
      const sent = Date.now();
      let ack;
      try {
        ack = await request(this.sender.socket, "chat:message", { sessionId: this.session.id, content: `Question ${n}: how does Tokio keep idle connections cheap?` }, 10_000);
      } catch {
        await sleep(500);
        continue;
      }
      if (!ack.ok) {
        this.run.refused[ack.error?.code] = (this.run.refused[ack.error?.code] ?? 0) + 1;
        await sleep(500);
        continue;
      }
      this.answers.push({ messageId: ack.messageId, sessionId: this.session.id, sent, sockets: [this.sender, this.watcher].filter(Boolean) });
      await this.ended(ack.messageId, 40_000);
    }
  }

  /** Waits until a socket of this user saw the answer's terminal event (or `ms` passed). */
  async ended(messageId, ms) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const seen = this.sockets.some((s) => s.events.some((e) => TERMINALS.includes(e.name) && e.payload?.messageId === messageId));
      if (seen) return;
      await sleep(100);
    }
  }
}

/** The faults, in order; each is given `run` and returns once it is over. */
const FAULTS = [
  ["pause a process past its lease (SIGSTOP 9 s)", async (run) => {
    const victim = run.cluster.servers[2].process;
    victim.kill("SIGSTOP");
    await sleep(9_000);
    victim.kill("SIGCONT");
  }],
  ["kill a process (SIGKILL) and start it again", async (run) => {
    const victim = run.cluster.servers[2];
    victim.process.kill("SIGKILL");
    await sleep(2_000);
    run.cluster.servers[2] = await run.cluster.startOne(run.extra);
    run.every.push(run.cluster.servers[2]);
  }],
  ["deploy: stop a process (SIGTERM, its answers handed over) and start it again", async (run) => {
    await run.cluster.servers[2].stop();
    run.cluster.servers[2] = await run.cluster.startOne(run.extra);
    run.every.push(run.cluster.servers[2]);
  }],
  ["cut every Redis connection (CLIENT KILL TYPE normal)", async (run) => {
    run.redis("CLIENT", "KILL", "TYPE", "normal");
  }],
  ["pause Redis 3 s (CLIENT PAUSE 3000 ALL)", async (run) => {
    run.redis("CLIENT", "PAUSE", "3000", "ALL");
    await sleep(3_000);
  }],
  ["restart Redis (empty)", async (run) => {
    await run.cluster.redis.stop();
    await sleep(2_000);
    await run.cluster.redis.start();
  }],
  ["40 ms of latency to Redis for 15 s", async (run) => {
    run.proxy.setDelay(40);
    await sleep(15_000);
    run.proxy.setDelay(0);
  }],
  ["a process whose clock is 90 s ahead (faketime)", async (run) => {
    if (!FAKETIME) throw new Error("faketime is not installed (tests/run-all.sh installs it)");
    await run.cluster.servers[2].stop();
    run.cluster.servers[2] = await run.cluster.startOne({ ...run.extra, LD_PRELOAD: FAKETIME, FAKETIME: "+90s" });
    run.every.push(run.cluster.servers[2]);
  }],
];

/** Checks one answer against what its sockets saw and what is stored; the violations found. */
function check(answer, stored) {
  const violations = [];
  const bad = (what) => violations.push(`${answer.messageId}: ${what}`);
  const row = stored.get(answer.messageId);
  if (!row) return [`${answer.messageId}: not stored`];
  if (row.status === "streaming") bad("still stored streaming");
  const whole = answer.sockets.filter((s) => s.closed === null);
  let seen = 0;
  for (const s of whole) {
    const mine = s.events.filter((e) => e.payload?.messageId === answer.messageId);
    const terminals = mine.filter((e) => TERMINALS.includes(e.name));
    if (terminals.length !== 1) {
      bad(`${s.role}: ${terminals.length} terminal events (${terminals.map((e) => e.payload.code ?? e.name)})`);
      continue;
    }
    if (mine.at(-1) !== terminals[0]) bad(`${s.role}: events after the terminal one`);
    const end = terminals[0];
    seen++;
    // Tokens follow on gapless; another process that continues the answer says from where
    // (`resumed`: what a socket holds past it was never logged, and is dropped).
    let next = 0;
    let pieces = [];
    let resumed = false;
    for (const e of mine) {
      if (e.name === "chat:stream:status" && e.payload.state === "resumed") {
        if (e.payload.seq > next - 1) bad(`${s.role}: resumed at ${e.payload.seq}, past what it saw`);
        pieces = pieces.filter((p) => p.seq <= e.payload.seq);
        next = e.payload.seq + 1;
        resumed = true;
        continue;
      }
      if (e.name !== "chat:stream:token") continue;
      const t = e.payload;
      if (t.seq - (t.count ?? 1) + 1 !== next) bad(`${s.role}: token gap or double at seq ${t.seq}`);
      pieces.push({ seq: t.seq, token: t.token });
      next = t.seq + 1;
    }
    if (resumed && end.name === "chat:stream:end" && pieces.map((p) => p.token).join("") !== end.payload.content) {
      bad(`${s.role}: the continued tokens differ from the end's content`);
    }
    const expected = end.name === "chat:stream:end" ? (end.payload.stopped ? "stopped" : "complete")
      : end.payload.code === "SERVER_SHUTDOWN" ? "interrupted" : "error";
    if (row.status !== expected) bad(`${s.role} saw ${end.payload.code ?? end.name}, stored ${row.status}`);
    if (end.name === "chat:stream:end" && end.payload.content !== row.text) bad(`${s.role}: text differs from the stored one`);
  }
  return violations.concat(seen || whole.length === 0 ? [] : [`${answer.messageId}: no socket saw it end`]);
}

/** Runs the chaos for `seconds` (every fault at least once); resolves to the report. */
export async function runChaos({ seconds = 600, users = 6, log = () => {} } = {}) {
  const run = { over: false, refused: {}, faults: [], faultTimes: [], extra: {} };
  run.cluster = await startProcesses(0, { env: { LOCAL_AI_PACING_MS: "40", WATCH_GRACE_SECS: "60" } });
  if (!run.cluster) return null;
  try {
    run.proxy = await latencyProxy(run.cluster.redis.port);
    run.extra = { REDIS_URL: `redis://127.0.0.1:${run.proxy.port}` };
    for (let i = 0; i < 3; i++) run.cluster.servers.push(await run.cluster.startOne(run.extra));
    run.every = [...run.cluster.servers];
    run.url = (i) => run.cluster.servers[i].url;
    run.redis = (...args) => execFileSync("redis-cli", ["-p", String(run.cluster.redis.port), ...args], { encoding: "utf8" });
    const people = Array.from({ length: users }, (_, i) => new User(run, i));
    await Promise.all(people.map((u) => u.start()));
    const loops = people.map((u) => u.loop());
    const started = Date.now();
    // CHAOS_FAULTS=restart,pause Redis: only the faults whose names contain one of these.
    const only = process.env.CHAOS_FAULTS?.split(",");
    const faults = only ? FAULTS.filter(([name]) => only.some((o) => name.includes(o))) : FAULTS;
    for (let i = 0; i < faults.length || Date.now() - started < seconds * 1000; i++) {
      await sleep(5_000);
      const [name, inject] = faults[i % faults.length];
      log(`fault: ${name}`);
      run.faultTimes.push({ name, at: Date.now() });
      await inject(run);
      run.faults.push(name);
    }
    await sleep(5_000);
    run.over = true;
    await Promise.all(loops);
    await sleep(15_000); // the sweeps of anything left
    return report(run, people);
  } finally {
    run.over = true;
    await run.proxy?.close();
    await run.cluster.stop();
  }
}

function report(run, people) {
  const sql = "select coalesce(json_agg(json_build_object('id', id, 'status', status, 'text', ai_response)), '[]') from messages";
  const rows = JSON.parse(execFileSync("psql", [run.cluster.databaseUrl, "-Atc", sql], { encoding: "utf8", maxBuffer: 1 << 28 }));
  const stored = new Map(rows.map((r) => [r.id, r]));
  const answers = people.flatMap((u) => u.answers);
  // Each violation names the last fault injected before its answer was sent, and how long before.
  const lastFault = (a) => run.faultTimes.filter((f) => f.at <= a.sent).at(-1);
  const when = (a) => (lastFault(a) ? `${lastFault(a).name}, ${((a.sent - lastFault(a).at) / 1000).toFixed(1)} s before` : "before any fault");
  const violations = answers.flatMap((a) => check(a, stored).map((v) => `${v} [stored ${stored.get(a.messageId)?.status}; after ${when(a)}]`));
  const outcomes = {};
  for (const a of answers) outcomes[stored.get(a.messageId)?.status] = (outcomes[stored.get(a.messageId)?.status] ?? 0) + 1;
  // What the servers logged about the answers that broke a rule: where to start looking.
  const broken = [...new Set(violations.map((v) => v.split(":")[0]))].slice(0, 3);
  const sessionOf = new Map(answers.map((a) => [a.messageId, a.sessionId]));
  const about = (id) => (l) => l.includes(id) || l.includes(sessionOf.get(id));
  const logs = broken.flatMap((id) => run.every.flatMap((server, i) => server.logs().split("\n").filter(about(id)).map((l) => `server ${i}: ${l}`)));
  // CHAOS_LOGS=dir: every server's whole log written there, one file per process started.
  if (process.env.CHAOS_LOGS) {
    mkdirSync(process.env.CHAOS_LOGS, { recursive: true });
    run.every.forEach((server, i) => writeFileSync(`${process.env.CHAOS_LOGS}/server-${i}.log`, server.logs()));
  }
  return { answers: answers.length, outcomes, refused: run.refused, faults: run.faults, violations, logs };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seconds = Number(process.argv[2] ?? 600);
  const result = await runChaos({ seconds, log: (line) => console.log(new Date().toISOString(), line) });
  console.log(JSON.stringify(result, null, 2));
  process.exit(result && result.violations.length === 0 ? 0 : 1);
}
