"""Client half of scripts/memory-flood.sh: THREADS clients post the largest review the webhook
reads (server.maxBodyBytes, 6 MiB) to /mutate over TLS as fast as they can for SECONDS, then
print the answers by status and the webhook's VmHWM/VmRSS.

    python3 scripts/memory_flood.py PORT CA_FILE WEBHOOK_PID SHAPE SECONDS THREADS FIXTURE

SHAPE: `annotations` (one pod with ~500,000 empty annotations) or `env` (one container with
~2,000,000 `{}` env entries): the two shapes that cost the most memory once read (DEVELOPMENT.md).
"""
import http.client
import json
import ssl
import sys
import threading
import time

MAX_BODY = 6 * 1024 * 1024


def body(fixture, shape):
    review = json.load(open(fixture))["review"]
    pod = review["request"]["object"]
    room = MAX_BODY - 64
    if shape == "annotations":
        pod["metadata"]["annotations"] = {"PLACEHOLDER": ""}
        text = json.dumps(review, separators=(",", ":"))
        parts, used, i = [], len(text), 0
        while used + 12 < room:
            part = f'"a{i}":"",'
            parts.append(part)
            used += len(part)
            i += 1
        text = text.replace('"PLACEHOLDER":""', "".join(parts) + '"z":""')
    elif shape == "env":
        pod["spec"]["containers"][0]["env"] = ["PLACEHOLDER"]
        text = json.dumps(review, separators=(",", ":"))
        text = text.replace('"PLACEHOLDER"', ",".join(["{}"] * ((room - len(text)) // 3)))
    else:
        sys.exit(f"unknown shape {shape}: annotations or env")
    return text.encode()


def main():
    port, ca, pid, shape = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seconds, threads, fixture = float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    payload = body(fixture, shape)
    ctx = ssl.create_default_context(cafile=ca)
    stop = time.time() + seconds
    answers, lock = {}, threading.Lock()

    def client():
        while time.time() < stop:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
                conn.request("POST", "/mutate", body=payload,
                             headers={"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                conn.close()
                key = str(answer.status)
            except (OSError, http.client.HTTPException) as e:
                # A 503 for a full body budget is sent before the body is read: the client
                # sees the connection closed under its upload.
                key = "closed:" + type(e).__name__
            with lock:
                answers[key] = answers.get(key, 0) + 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with open(f"/proc/{pid}/status") as f:
        mem = {k: v.split()[0] for k, v in (line.split(":", 1) for line in f) if k in ("VmHWM", "VmRSS")}
    print(f"{shape}: body {len(payload)} bytes, {threads} clients, {seconds:.0f} s, answers {answers}, "
          f"VmHWM={int(mem['VmHWM']) / 1024:.1f}MiB VmRSS={int(mem['VmRSS']) / 1024:.1f}MiB")


if __name__ == "__main__":
    main()
