"""A python-socketio client, as Python users connect: asks one question and prints what came back.

usage: chat_client.py URL TOKEN SESSION_ID TRANSPORT   (TRANSPORT: websocket or polling)
Prints one JSON line: {"connected", "ack", "tokens", "final", "error"}.
"""
import json
import sys
import threading

import socketio


def main():
    url, token, session_id, transport = sys.argv[1:5]
    result = {"connected": False, "ack": None, "tokens": [], "final": None, "error": None}
    done = threading.Event()
    sio = socketio.Client(reconnection=False)

    @sio.on("chat:stream:token")
    def on_token(payload):
        result["tokens"].append(payload["token"])

    @sio.on("chat:stream:end")
    def on_end(payload):
        result["final"] = payload["content"]
        done.set()

    @sio.on("chat:error")
    def on_error(payload):
        result["error"] = payload
        done.set()

    try:
        sio.connect(url, auth={"token": token}, transports=[transport], wait_timeout=10)
    except socketio.exceptions.ConnectionError as e:
        result["error"] = str(e)
        print(json.dumps(result))
        return
    result["connected"] = True
    result["transport"] = sio.transport()
    result["ack"] = sio.call("chat:message", {"sessionId": session_id, "content": "What does Tokio do?"}, timeout=10)
    done.wait(20)
    sio.disconnect()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
