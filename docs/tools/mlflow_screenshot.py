"""Screenshot of `mlflow ui`'s runs table, a sweep's parent run expanded: docs/images/.

How docs/images/mlflow-ui-sweep.png was taken (docs/tracking.md): headless Chromium, driven over
its DevTools protocol on loopback, against `mlflow ui` on 127.0.0.1:5000. Needs Chromium
(`apt-get install chromium-headless-shell`) and `pip install websocket-client`; not part of the
package or its tests.

    python docs/tools/mlflow_screenshot.py http://127.0.0.1:5000/#/experiments/1/runs out.png
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import websocket

EXPAND_FIRST_PARENT = (
    "document.querySelector('button[data-component-id*=runnamecellrenderer]').click()"
)
CLOSE_ASSISTANT = "document.querySelectorAll('button[aria-label=Close]').forEach(b => b.click())"
PORT = 9222


def main(url: str, out: str) -> None:
    browser = subprocess.Popen(
        [
            "chromium-headless-shell",
            "--no-sandbox",
            "--headless",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={PORT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Debian's chromium-headless-shell is a wrapper script: ending its process alone would
        # leave Chromium's own processes running. In a session of its own, its process group
        # holds all of them, and _end ends that group.
        start_new_session=True,
    )
    try:
        page = _page()
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        calls = iter(range(1, 1_000_000))

        def call(method: str, **params):
            number = next(calls)
            ws.send(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = json.loads(ws.recv())
                if message.get("id") == number:
                    return message.get("result", {})

        def script(expression: str):
            result = call("Runtime.evaluate", expression=expression, returnByValue=True)
            return result.get("result", {}).get("value")

        call("Emulation.setDeviceMetricsOverride", width=1600, height=720, deviceScaleFactor=1,
             mobile=False)  # fmt: skip
        call("Page.navigate", url=url)
        for _ in range(120):  # until the runs table has loaded
            time.sleep(0.5)
            if script("document.body.innerText.includes('matching runs')"):
                break
        rows = "document.querySelectorAll('.ag-center-cols-container .ag-row').length"
        for attempt in range(20):  # until the parent's children show (a busy machine is slow)
            if attempt % 5 == 0:
                script(EXPAND_FIRST_PARENT)
            time.sleep(1)
            if (script(rows) or 0) > 1:
                break
        script(CLOSE_ASSISTANT)
        time.sleep(2)
        shot = call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        _end(browser)


def _end(browser: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the browser's whole process group (its session's id is the wrapper's pid),
    then SIGKILL to whatever of the group is left after `grace_s`."""
    try:
        os.killpg(browser.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            browser.poll()  # reaps the wrapper once it exits: a zombie would still count
            os.killpg(browser.pid, 0)  # ProcessLookupError once no process of the group is left
            time.sleep(0.1)
        os.killpg(browser.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group has ended
    browser.wait()


def _page() -> dict:
    for _ in range(50):
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json"))
            return next(t for t in tabs if t["type"] == "page")
        except (OSError, StopIteration):
            time.sleep(0.2)
    raise SystemExit("Chromium's DevTools did not answer")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
