'use strict';
// queue.js — define the queue (reference, step 01)
const { Queue } = require('bullmq');
const { connection } = require('./redis');

const imageQueue = new Queue('image-processing', { connection });

module.exports = { imageQueue };
