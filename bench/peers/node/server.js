// The Node.js `ws` reference: the near-limit broadcast, one JSON.stringify per event and
// `client.send(text)` to every open client. Same frames as the lobby (welcome; join ->
// token + joined to all; leave -> ok + left to all, + room_closed once the room is empty;
// ping -> pong), no auth.
// With OPENVIDU_URL and OPENVIDU_SECRET set, a join gets its token from OpenVidu's REST
// API as the lobby does (the session once per room, then a connection, on keep-alive
// connections), and a leave deletes the connection and, once the room is empty, the
// session: the reference for the lobby's time on a token.
// Keep-alive as the `ws` README recommends: every HEARTBEAT_MS (default 15000, the
// lobby's LOBBY_PING_INTERVAL; 0: none) ping every client, and terminate those that did
// not pong since the last round. LAG_LOG=path: an event-loop stall probe written as
// `bench.serve_lobby --lag-log` writes it (CLOCK_MONOTONIC ns, lag ms; over 5 ms only).
// Usage: node server.js PORT
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const crypto = require('node:crypto');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const openvidu = process.env.OPENVIDU_URL ? new URL(process.env.OPENVIDU_URL) : null;
const agent = new http.Agent({ keepAlive: true });
const authorization = 'Basic ' + Buffer.from(`OPENVIDUAPP:${process.env.OPENVIDU_SECRET || ''}`).toString('base64');
const sessions = new Set(); // rooms whose OpenVidu session exists
const members = new Map(); // room -> people in it

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const content = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = { Authorization: authorization, Accept: 'application/json' };
    if (content) Object.assign(headers, { 'Content-Type': 'application/json', 'Content-Length': content.length });
    const req = http.request({
      agent, method, headers, host: openvidu.hostname, port: openvidu.port, path: '/openvidu/api' + path,
    }, (res) => {
      const parts = [];
      res.on('data', (part) => parts.push(part));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString();
        resolve({ status: res.statusCode, json: text ? JSON.parse(text) : null });
      });
    });
    req.on('error', reject);
    req.end(content);
  });
}

async function grant(room, nickname) {
  const path = `/sessions/${encodeURIComponent(room)}`;
  if (!sessions.has(room)) {
    const made = await call('POST', '/sessions', { customSessionId: room });
    if (made.status !== 200 && made.status !== 409) throw new Error(`session: HTTP ${made.status}`);
    sessions.add(room);
  }
  const data = JSON.stringify({ serverData: 'anonymous', participantId: nickname });
  const made = await call('POST', `${path}/connection`, { type: 'WEBRTC', role: 'PUBLISHER', data });
  if (made.status !== 200) throw new Error(`connection: HTTP ${made.status}`);
  return made.json;
}

async function revoke(room, connection) {
  const path = `/sessions/${encodeURIComponent(room)}`;
  await call('DELETE', `${path}/connection/${encodeURIComponent(connection)}`);
  if (!members.get(room) && sessions.delete(room)) await call('DELETE', path);
}
const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, maxPayload: 4096 });

const welcome = JSON.stringify({ type: 'welcome', user: { name: 'anonymous' }, rooms: [] });

function participant(nickname) {
  const id = 'p_' + crypto.randomBytes(9).toString('base64url');
  return { id, user: 'anonymous', nickname, role: 'PUBLISHER' };
}

function broadcast(text) {
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(text);
  }
}

function heartbeat() { this.isAlive = true; }

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', heartbeat);
  let me = null;
  let room = '';
  let connection = null;
  ws.send(welcome);
  ws.on('message', async (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    const ref = msg.ref === undefined ? null : msg.ref;
    if (msg.type === 'join') {
      room = String(msg.room || '');
      me = participant(String(msg.nickname || ''));
      let token = `ws://media?sessionId=${room}&token=tok_${crypto.randomBytes(8).toString('hex')}`;
      members.set(room, (members.get(room) || 0) + 1);
      if (openvidu) {
        try {
          ({ id: connection, token } = await grant(room, me.id));
        } catch (error) {
          members.set(room, members.get(room) - 1);
          ws.send(JSON.stringify({ type: 'error', ref, code: 'media_unavailable', message: String(error) }));
          return;
        }
      }
      ws.send(JSON.stringify({ type: 'token', ref, room, token }));
      broadcast(JSON.stringify({ type: 'joined', room, participant: me }));
    } else if (msg.type === 'leave') {
      ws.send(JSON.stringify({ type: 'ok', ref }));
      if (me) {
        broadcast(JSON.stringify({ type: 'left', room, participant: me, reason: 'left' }));
        members.set(room, members.get(room) - 1);
        if (!members.get(room)) {
          members.delete(room);
          broadcast(JSON.stringify({ type: 'room_closed', room }));
        }
        me = null;
        if (connection) {
          const gone = connection;
          connection = null;
          revoke(room, gone).catch(() => {});
        }
      }
    } else if (msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', ref }));
    }
  });
  ws.on('error', () => {});
});

const heartbeatMs = Number(process.env.HEARTBEAT_MS ?? 15000);
if (heartbeatMs > 0) {
  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (ws.isAlive === false) { ws.terminate(); continue; }
      ws.isAlive = false;
      ws.ping();
    }
  }, heartbeatMs);
  wss.on('close', () => clearInterval(pinger));
}

if (process.env.LAG_LOG) {
  const out = fs.createWriteStream(process.env.LAG_LOG);
  const period = 10; // ms, as the lobby's probe
  let due = performance.now() + period;
  setInterval(() => {
    const now = performance.now();
    const lag = now - due;
    due = now + period;
    if (lag > 5) out.write(`${process.hrtime.bigint()} ${lag.toFixed(1)}\n`);
  }, period);
}

server.listen(port, '127.0.0.1', 4096, () => console.log(`listening ${port}`));
