'use strict';
// Where Redis is: REDIS_URL (redis://host:port/db or unix:///path.sock?db=n), as Darkroom
// reads it; the reference hard-codes { host: 'localhost', port: 6379 }.
const Redis = require('ioredis');

function connectionOptions(url = process.env.REDIS_URL || 'redis://localhost:6379/0') {
  const parsed = new URL(url);
  const password = parsed.searchParams.get('password') || decodeURIComponent(parsed.password)
    || undefined;
  if (parsed.protocol === 'unix:') {
    return { path: parsed.pathname, db: Number(parsed.searchParams.get('db') || 0), password };
  }
  return { host: parsed.hostname, port: Number(parsed.port || 6379),
    db: Number(parsed.pathname.slice(1) || 0), password };
}

const connection = connectionOptions();

// The app's own client (sessions, Image records), apart from BullMQ's connections.
const redis = new Redis(connection);

module.exports = { connection, redis };
