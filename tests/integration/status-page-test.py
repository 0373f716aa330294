#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The status page (GET /) in a real browser: headless Chromium opens the page of a running photond, the test
types the API token into the page's form and submits it, then makes photond do something over its control
socket — a publish, a lock, a job — and reads the page's DOM through Chromium's DevTools protocol until each
shows up. A screenshot of the page is kept (--screenshot).

usage: status-page-test.py --url http://127.0.0.1:PORT/ --token TOKEN --socket CONTROL_SOCKET
                           [--screenshot FILE] [--chromium /usr/bin/chromium]

Exit status 0 when every check passed, 1 with the failed check on stderr, 77 (skip) when Chromium is missing or
cannot start here. The DevTools client below is the few lines of RFC 6455 a localhost text exchange needs (the
standard library has no WebSocket), so the test needs nothing beyond Python and Chromium.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

SKIP = 77


class DevTools:
    """A minimal client of Chromium's DevTools protocol over one WebSocket (unmasked frames from the server,
    masked ones from us, text only)."""

    def __init__(self, ws_url):
        u = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f'GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n'
                           f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n')
                          .encode())
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError('DevTools closed the connection during the handshake')
            head += chunk
        if b' 101 ' not in head.split(b'\r\n', 1)[0]:
            raise RuntimeError('DevTools refused the WebSocket: ' + head.split(b'\r\n', 1)[0].decode())
        self.buf = head.split(b'\r\n\r\n', 1)[1]
        self.next_id = 0

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError('DevTools closed the connection')
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack('!BB', 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack('!BBH', 0x81, 0x80 | 126, n)
        else:
            head = struct.pack('!BBQ', 0x81, 0x80 | 127, n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self):
        message = b''
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack('!H', self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack('!Q', self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            opcode = b0 & 0x0f
            if opcode == 8:
                raise RuntimeError('DevTools closed the WebSocket')
            if opcode in (0, 1, 2):
                message += payload
                if b0 & 0x80:
                    return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self._send(json.dumps({'id': mine, 'method': method, 'params': params}))
        while True:
            msg = self._recv()
            if msg.get('id') == mine:
                if 'error' in msg:
                    raise RuntimeError(f'{method}: {msg["error"]}')
                return msg.get('result', {})

    def evaluate(self, expr):
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r:
            raise RuntimeError(f'page script failed: {r["exceptionDetails"]}')
        return r['result'].get('value')


class Control:
    """photond's control socket: one NDJSON request at a time, answers matched by id (pushes skipped)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buf = b''
        self.n = 0

    def request(self, **req):
        self.n += 1
        req['id'] = f'page-test-{self.n}'
        self.sock.sendall((json.dumps(req) + '\n').encode())
        while True:
            while b'\n' not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError('photond closed the control connection')
                self.buf += chunk
            line, self.buf = self.buf.split(b'\n', 1)
            msg = json.loads(line)
            if msg.get('id') == req['id']:
                if msg.get('type') == 'error' or msg.get('success') is False:
                    raise RuntimeError(f'{req["type"]} failed: {msg}')
                return msg


def start_chromium(binary, profile):
    args = [binary, '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
            '--no-default-browser-check', '--disable-extensions', '--remote-debugging-port=0',
            f'--user-data-dir={profile}', '--window-size=1000,1400', 'about:blank']
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port_file = os.path.join(profile, 'DevToolsActivePort')
    deadline = time.monotonic() + 30
    # Chromium writes the port it bound once DevTools listens: that file is the readiness signal.
    while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
        if proc.poll() is not None:
            raise OSError('chromium exited at start: ' + proc.stderr.read().decode(errors='replace')[-2000:])
        if time.monotonic() > deadline:
            proc.kill()
            raise OSError('chromium did not open DevTools within 30 s')
        time.sleep(0.05)
    port = int(open(port_file).read().split()[0])
    return proc, port


def wait_for(dt, what, expr, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = dt.evaluate(expr)
        if value:
            return value
        if time.monotonic() > deadline:
            text = dt.evaluate('document.body.innerText')
            raise AssertionError(f'{what}: not on the page after {timeout} s. The page reads:\n{text}')
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True)
    ap.add_argument('--token', required=True)
    ap.add_argument('--socket', required=True)
    ap.add_argument('--screenshot')
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    a = ap.parse_args()

    if not os.access(a.chromium, os.X_OK):
        print(f'SKIP: no Chromium at {a.chromium} (apt-get install chromium)', file=sys.stderr)
        return SKIP
    profile = tempfile.mkdtemp(prefix='photond-page-')
    try:
        try:
            proc, port = start_chromium(a.chromium, profile)
        except OSError as e:
            print(f'SKIP: Chromium cannot run here: {e}', file=sys.stderr)
            return SKIP
        try:
            return run(a, port)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def run(a, port):
    targets = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10))
    page = next(t for t in targets if t.get('type') == 'page')
    dt = DevTools(page['webSocketDebuggerUrl'])
    dt.call('Page.enable')
    dt.call('Page.navigate', url=a.url)
    wait_for(dt, 'the token form', 'document.readyState === "complete" && !!document.getElementById("token") && '
             '!document.getElementById("login").hidden')
    # The inline style ran: its hash in photond's Content-Security-Policy matches (the script's is proven by the
    # form being shown at all). And the form is usable without a mouse: the field has its label and has focus.
    wait_for(dt, "the page's style (CSP hash)", 'getComputedStyle(document.querySelector("header")).display === "flex"',
             timeout=2)
    wait_for(dt, 'the labelled, focused token field', '(() => { const t = document.getElementById("token"); '
             'return t.labels.length === 1 && t.labels[0].textContent.trim().startsWith("Token") && '
             'document.activeElement === t; })()', timeout=2)

    # A wrong token first: the page must say so and stay on the form.
    dt.evaluate('document.getElementById("token").value = "wrong-token"; '
                'document.querySelector("#login-form button").click(); true')
    wait_for(dt, 'the refusal of a wrong token', '!document.getElementById("login").hidden && '
             'document.getElementById("login-error").textContent.length > 0')

    # Typed as a user would: focus, value, the form's own submit button.
    dt.evaluate(f'const t = document.getElementById("token"); t.focus(); t.value = {json.dumps(a.token)}; '
                'document.querySelector("#login-form button").click(); true')
    wait_for(dt, 'the dashboard', '!document.getElementById("dash").hidden && '
             'document.getElementById("summary").children.length > 0')

    ctl = Control(a.socket)
    # A channel the page lists (a subscriber makes it known), then a publish the live log must show.
    sub = Control(a.socket)
    sub.request(type='subscribe', channel='page-test:news', clientType='page-test')
    wait_for(dt, 'the channel page-test:news', 'document.querySelector("#channels tbody").innerText.includes("page-test:news")')
    wait_for(dt, 'the live stream', 'document.getElementById("conn").textContent === "live"')
    ctl.request(type='publish', channel='page-test:news', message={'headline': 'page-test-publish'})
    wait_for(dt, 'the published event', 'document.getElementById("events").innerText.includes("page-test-publish")')

    # A lock's holder is the request's sessionId (lockHolder only names the holder of an unlock or a transfer).
    ctl.request(type='lock', lockName='page-test-lock', sessionId='page-test-holder', lockTimeout=600000)
    wait_for(dt, 'the lock and its holder', '(() => { const t = document.querySelector("#locks tbody").innerText; '
             'return t.includes("page-test-lock") && t.includes("page-test-holder"); })()')

    ctl.request(type='schedule', jobId='page-test-job', method='tick', cron='0 0 1 1 *',
                photonName='pagetest', args={})
    wait_for(dt, 'the job and its next run', '(() => { const t = document.querySelector("#jobs tbody").innerText; '
             'return t.includes("page-test-job") && t.includes("pagetest.tick"); })()')

    if a.screenshot:
        shot = dt.call('Page.captureScreenshot', format='png', captureBeyondViewport=True)
        with open(a.screenshot, 'wb') as f:
            f.write(base64.b64decode(shot['data']))
        print(f'screenshot: {a.screenshot}')

    # On a phone: the page itself never scrolls sideways (the tables scroll in their own regions).
    dt.call('Emulation.setDeviceMetricsOverride', width=360, height=780, deviceScaleFactor=2, mobile=True)
    wait_for(dt, 'a page as wide as a phone', 'document.documentElement.scrollWidth <= window.innerWidth && '
             'window.innerWidth <= 400', timeout=5)
    if a.screenshot:
        phone = os.path.splitext(a.screenshot)[0] + '-phone.png'
        shot = dt.call('Page.captureScreenshot', format='png', captureBeyondViewport=True)
        with open(phone, 'wb') as f:
            f.write(base64.b64decode(shot['data']))
        print(f'screenshot: {phone}')
    print('status page: style under its CSP, token form, wrong token refused, dashboard, publish, lock and job '
          'all shown, fits a phone')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (AssertionError, RuntimeError) as e:
        print(f'FAIL: {e}', file=sys.stderr)
        sys.exit(1)
