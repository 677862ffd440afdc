// The Node.js `ws` reference: the near-limit broadcast, one JSON.stringify per event and
// `client.send(text)` to every open client. Same frames as the lobby (welcome; join ->
// token + joined to all; leave -> ok + left + room_closed to all; ping -> pong), no auth.
// Usage: node server.js PORT
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
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

wss.on('connection', (ws) => {
  let me = null;
  let room = '';
  ws.send(welcome);
  ws.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    const ref = msg.ref === undefined ? null : msg.ref;
    if (msg.type === 'join') {
      room = String(msg.room || '');
      me = participant(String(msg.nickname || ''));
      const token = `ws://media?sessionId=${room}&token=tok_${crypto.randomBytes(8).toString('hex')}`;
      ws.send(JSON.stringify({ type: 'token', ref, room, token }));
      broadcast(JSON.stringify({ type: 'joined', room, participant: me }));
    } else if (msg.type === 'leave') {
      ws.send(JSON.stringify({ type: 'ok', ref }));
      if (me) {
        broadcast(JSON.stringify({ type: 'left', room, participant: me, reason: 'left' }));
        broadcast(JSON.stringify({ type: 'room_closed', room }));
        me = null;
      }
    } else if (msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', ref }));
    }
  });
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', 4096, () => console.log(`listening ${port}`));
