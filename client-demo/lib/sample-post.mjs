// The article the demo and the tests chat about.
export const samplePost = {
  url: "https://example.com/blog/rust-chat-servers",
  title: "Building real-time chat servers in Rust",
  summary: "Rust with Tokio and Socket.IO makes chat servers that are fast, lean and safe.",
  content: [
    "Real-time chat needs a server that holds many idle connections cheaply.",
    "Rust futures are state machines, so an idle connection costs only a few kilobytes.",
    "Tokio schedules tasks on a work-stealing runtime that keeps every core busy.",
    "Socket.IO adds rooms, acknowledgements and automatic reconnection on top of websockets.",
    "Streaming answers token by token makes an AI assistant feel fast even when the model is slow.",
    "Without a garbage collector, latency stays flat under load.",
  ].join(" "),
};
