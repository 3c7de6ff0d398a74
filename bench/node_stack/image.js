'use strict';
// The reference's Image model (Mongo-style Image.create / Image.findByIdAndUpdate), kept in
// Redis hashes because no MongoDB is here: one HSET per write, no schema, no index, no
// read-back. That is cheaper than a Mongo round trip, so it favours this stack.
const crypto = require('node:crypto');
const { redis } = require('./redis');

const key = (id) => `image:${id}`;

async function create(fields) {
  // A Mongo ObjectId is 12 random-looking bytes; so is this id.
  const id = crypto.randomBytes(12).toString('hex');
  const doc = { _id: id, ...fields, createdAt: new Date().toISOString() };
  await redis.hset(key(id), doc);
  return { ...doc, id };
}

async function findByIdAndUpdate(id, update) {
  await redis.hset(key(id), update);
}

module.exports = { create, findByIdAndUpdate };
