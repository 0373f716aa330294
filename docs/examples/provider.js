#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// A complete photond provider: this process serves the "notes" photon's methods. It uses only Node's `net`.
//   node provider.js                          # then: photonctl call notes add '{"text":"milk"}'
// The socket is ${PHOTON_HOME:-~/.photon}/.data/daemon.sock, as for every Photon client.
'use strict';
const net = require('net');
const os = require('os');
const path = require('path');

const socketPath = path.join(process.env.PHOTON_HOME || path.join(os.homedir(), '.photon'), '.data', 'daemon.sock');
const notes = [];

const methods = {
  async add({ text }, call) {
    if (!text) text = await call.prompt({ type: 'text', message: 'Note text?' });
    if (text == null) throw new Error('no text given');
    notes.push(text);
    call.emit({ emit: 'progress', message: `saved note ${notes.length}` });
    return { id: notes.length, text };
  },
  list() {
    return notes;
  },
};

const sock = net.createConnection(socketPath);
const send = (msg) => sock.write(JSON.stringify(msg) + '\n');
const waitingPrompts = new Map();   // invoke id -> resolve of the pending prompt

sock.setEncoding('utf8');
sock.on('connect', () => send({ type: 'provide', id: 'provide-1', photonName: 'notes' }));
sock.on('close', () => process.exit(1));

let buffer = '';
sock.on('data', (chunk) => {
  buffer += chunk;
  for (let nl; (nl = buffer.indexOf('\n')) >= 0; buffer = buffer.slice(nl + 1))
    if (buffer.slice(0, nl).trim()) handle(JSON.parse(buffer.slice(0, nl)));
});

async function handle(msg) {
  if (msg.type === 'result' && msg.id === 'provide-1') return console.error('serving "notes"');
  if (msg.type === 'error') return console.error('photond:', msg.error);
  if (msg.type === 'prompt_response') return waitingPrompts.get(msg.id)?.(msg.promptValue);
  if (msg.type !== 'invoke') return;

  const call = {
    emit: (data) => send({ type: 'emit', id: msg.id, emitData: data }),
    prompt: (prompt) => new Promise((resolve) => {
      waitingPrompts.set(msg.id, resolve);
      send({ type: 'prompt', id: msg.id, prompt });
    }),
  };
  try {
    const method = methods[msg.method];
    if (!method) throw new Error(`Tool not found: ${msg.method}`);
    const data = await method(msg.args || {}, call);
    send({ type: 'invoke_result', id: msg.id, success: true, data: data ?? null });
  } catch (e) {
    send({ type: 'invoke_result', id: msg.id, success: false, error: e.message });
  } finally {
    waitingPrompts.delete(msg.id);
  }
}
