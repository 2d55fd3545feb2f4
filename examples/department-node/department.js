#!/usr/bin/env node
// A department system for Orderflow in Node.js: it reviews the orders of one department.
//
// Built from docs/integration.md alone: it consumes the department's queue
// `review.<department>`, checks each order against two rules, posts its remarks as an
// annotation (`review.annotation`) and gives its verdict (`review.verdict`), both on the
// exchange `orderflow.verdicts` with the department as routing key and the AMQP `user_id`
// of its own RabbitMQ user. A request is acknowledged only once the broker confirmed the
// verdict; the message ids are derived from the review, so a verdict sent again after a
// redelivery (a crash, a lost connection) is applied once.
//
//   npm ci
//   node department.js --amqp-url amqp://dept-finance:PASSWORD@127.0.0.1:5672/orderflow \
//       --department finance --max-total 500000 --max-settlement-days 45
//
// Rules (a department would have its own): the order's total at most `--max-total`, the
// payment's settlement period at most `--max-settlement-days`. An order that breaks one
// gets an annotation on the field and a request for changes; any other is approved.
// It prints one JSON line per verdict on stdout; logs go to stderr. SIGTERM or SIGINT
// stop it after the review in hand. When the connection is lost it exits with status 1,
// for its supervisor (systemd, Kubernetes) to start it again: the broker gives the
// unacknowledged requests back, and they are reviewed again.

'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const amqp = require('amqplib');

const VERDICTS = 'orderflow.verdicts';
// RFC 4122's namespace for URLs, for name-based (version 5) ids
const NAMESPACE_URL = '6ba7b811-9dad-11d1-80b4-00c04fd430c8';

function log(...parts) {
  console.error(new Date().toISOString(), ...parts);
}

// --- decimals -------------------------------------------------------------------------
// Money travels as decimal strings ("20769.40"); JavaScript numbers are binary floats,
// so amounts are compared as scaled BigInts, never as Numbers.

function parseDecimal(text) {
  const match = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(text).trim());
  if (!match || (match[2] === '' && (match[3] ?? '') === '')) {
    throw new Error(`not a decimal: ${JSON.stringify(text)}`);
  }
  const [, sign, whole, fraction = '', exponent = '0'] = match;
  const digits = BigInt(`${whole}${fraction}` || '0');
  return { units: sign === '-' ? -digits : digits, scale: fraction.length - Number(exponent) };
}

function compareDecimal(a, b) {
  const x = parseDecimal(a);
  const y = parseDecimal(b);
  const scale = Math.max(x.scale, y.scale);
  const left = x.units * 10n ** BigInt(scale - x.scale);
  const right = y.units * 10n ** BigInt(scale - y.scale);
  return left < right ? -1 : left > right ? 1 : 0;
}

// --- ids ------------------------------------------------------------------------------

function uuidV5(name, namespace = NAMESPACE_URL) {
  const hash = crypto.createHash('sha1');
  hash.update(Buffer.from(namespace.replace(/-/g, ''), 'hex'));
  hash.update(Buffer.from(name, 'utf8'));
  const bytes = hash.digest().subarray(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// W3C trace context: keep the request's trace, with a span of our own
function childTraceparent(parent) {
  const span = crypto.randomBytes(8).toString('hex');
  const match = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/.exec(String(parent ?? ''));
  if (match) {
    return `00-${match[1]}-${span}-${match[2]}`;
  }
  return `00-${crypto.randomBytes(16).toString('hex')}-${span}-01`;
}

// --- the department's rules -----------------------------------------------------------

function remarks(request, { maxTotal, maxSettlementDays }) {
  const found = [];
  const days = request.order?.payment?.settlement_days;
  if (Number.isInteger(days) && days > maxSettlementDays) {
    found.push({
      field: '/payment/settlement_days',
      message: `Settlement in ${days} days; at most ${maxSettlementDays} without approval`,
      severity: 'blocker',
    });
  }
  const { total, currency } = request.totals ?? {};
  if (total !== undefined && compareDecimal(total, maxTotal) > 0) {
    found.push({
      field: '/lines',
      message: `Total ${total} ${currency} is above ${maxTotal}`,
      severity: 'major',
    });
  }
  return found;
}

// --- the service ----------------------------------------------------------------------

class DepartmentSystem {
  constructor({ amqpUrl, department, reviewerId, maxTotal, maxSettlementDays }) {
    this.amqpUrl = amqpUrl;
    this.department = department;
    this.queue = `review.${department}`;
    this.reviewer = { id: reviewerId, name: `${department} review system` };
    this.rules = { maxTotal, maxSettlementDays };
    // RabbitMQ checks user_id against the user we connect as; the router refuses a
    // department message without it
    const user = decodeURIComponent(new URL(amqpUrl).username);
    if (!user) {
      throw new Error("--amqp-url must name the department's RabbitMQ user");
    }
    this.userId = user;
    this.stopping = false;
    this.inHand = Promise.resolve(); // one review at a time, in order of delivery
    this.returned = new Set(); // message ids the broker could not route (mandatory)
  }

  async start() {
    this.connection = await amqp.connect(this.amqpUrl, {
      clientProperties: { connection_name: `department-${this.department}-node` },
    });
    this.connection.on('error', (err) => log('connection error:', err.message));
    this.connection.on('close', () => this.lost('connection closed'));
    // a department's user may declare nothing: check, passively, what the bus set-up made
    this.publishing = await this.connection.createConfirmChannel();
    this.publishing.on('error', (err) => log('publishing channel error:', err.message));
    this.publishing.on('close', () => this.lost('publishing channel closed'));
    this.publishing.on('return', (message) => this.returned.add(message.properties.messageId));
    await this.publishing.checkExchange(VERDICTS);
    this.consuming = await this.connection.createChannel();
    this.consuming.on('error', (err) => log('consuming channel error:', err.message));
    this.consuming.on('close', () => this.lost('consuming channel closed'));
    await this.consuming.checkQueue(this.queue);
    await this.consuming.prefetch(10);
    const { consumerTag } = await this.consuming.consume(this.queue, (message) => {
      if (message === null) {
        this.lost('the broker cancelled the consumer (queue deleted?)');
        return;
      }
      this.inHand = this.inHand.then(() => this.handle(message));
    });
    this.consumerTag = consumerTag;
    log(`reviewing for ${this.department} as RabbitMQ user ${this.userId}`);
  }

  lost(why) {
    if (!this.stopping) {
      log(`${why}: exiting; unacknowledged requests will be delivered again`);
      process.exit(1);
    }
  }

  async stop() {
    if (this.stopping) return;
    log('stopping after the review in hand');
    await this.consuming.cancel(this.consumerTag);
    await this.inHand;
    this.stopping = true;
    await this.connection.close();
    log('stopped');
  }

  publish(type, schema, body, messageId, traceparent) {
    const content = Buffer.from(JSON.stringify(body), 'utf8');
    return new Promise((resolve, reject) => {
      this.publishing.publish(
        VERDICTS,
        this.department, // the routing key is the department the message names
        content,
        {
          contentType: 'application/json',
          persistent: true, // delivery_mode 2
          mandatory: true, // returned (and so refused below) if nothing is bound
          messageId,
          correlationId: body.order_id,
          type,
          userId: this.userId,
          timestamp: Math.floor(Date.now() / 1000), // AMQP timestamps are in seconds
          headers: {
            'x-schema': schema,
            // a string: a JavaScript number would travel as the smallest integer type
            // that holds it (signed 8-bit for 1)
            'x-schema-version': '1',
            traceparent,
          },
        },
        (err) => {
          if (err) {
            reject(new Error(`the broker did not take ${type} ${messageId}: ${err.message ?? err}`));
          } else if (this.returned.delete(messageId)) {
            reject(new Error(`${type} ${messageId} was returned: no queue bound for ${this.department}`));
          } else {
            resolve();
          }
        },
      );
    });
  }

  async review(request, traceparent) {
    const about = {
      review_id: request.review_id,
      order_id: request.order_id,
      revision: request.revision,
      department: this.department,
    };
    const found = remarks(request, this.rules);
    if (found.length > 0) {
      // remarks while reviewing; they reach the salesperson with the change request
      await this.publish(
        'review.annotation',
        'orderflow.review.annotation',
        { ...about, reviewer: this.reviewer, annotations: found },
        uuidV5(`${request.review_id}/annotation`),
        childTraceparent(traceparent),
      );
    }
    const decision = found.length > 0 ? 'request_changes' : 'approve';
    await this.publish(
      'review.verdict',
      'orderflow.review.verdict',
      {
        ...about,
        decision,
        reviewer: this.reviewer,
        comment: found.length > 0 ? 'See the annotations' : "Within the department's limits",
        // repeated in the verdict: the router may handle the verdict before the annotation
        // sent just ahead of it, and lists each remark once
        annotations: found,
      },
      uuidV5(`${request.review_id}/verdict`),
      childTraceparent(traceparent),
    );
    return decision;
  }

  async handle(message) {
    const { type, headers = {} } = message.properties;
    let body;
    try {
      body = JSON.parse(message.content.toString('utf8'));
    } catch (err) {
      log(`unreadable ${type} message, left in the dead-letter queue: ${err.message}`);
      this.consuming.nack(message, false, false);
      return;
    }
    const version = headers['x-schema-version'];
    if (version !== undefined && String(version) !== '1') {
      log(`${type} of schema version ${version}: not understood, left in the dead-letter queue`);
      this.consuming.nack(message, false, false);
      return;
    }
    if (type === 'review.cancelled') {
      log(`review ${body.review_id} cancelled: ${body.reason}`);
      this.consuming.ack(message);
      return;
    }
    if (type !== 'review.requested') {
      log(`unexpected message type ${JSON.stringify(type)}, left in the dead-letter queue`);
      this.consuming.nack(message, false, false);
      return;
    }
    let decision;
    try {
      decision = await this.review(body, headers.traceparent);
    } catch (err) {
      // not confirmed by the broker: the request comes back and is reviewed again
      log(`verdict not sent for review ${body.review_id}: ${err.message}`);
      this.consuming.nack(message, false, true);
      return;
    }
    this.consuming.ack(message); // only once the verdict is confirmed
    process.stdout.write(
      `${JSON.stringify({
        review_id: body.review_id,
        order_id: body.order_id,
        revision: body.revision,
        decision,
        redelivered: message.fields.redelivered,
      })}\n`,
    );
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      'amqp-url': { type: 'string', default: process.env.ORDERFLOW_AMQP_URL },
      department: { type: 'string' },
      'reviewer-id': { type: 'string' },
      'max-total': { type: 'string', default: '1000000' },
      'max-settlement-days': { type: 'string', default: '60' },
    },
  });
  if (!values['amqp-url'] || !values.department) {
    console.error('usage: node department.js --amqp-url URL --department NAME');
    console.error('       [--reviewer-id ID] [--max-total DECIMAL] [--max-settlement-days N]');
    process.exit(2);
  }
  parseDecimal(values['max-total']); // refuse a bad limit at start
  const system = new DepartmentSystem({
    amqpUrl: values['amqp-url'],
    department: values.department,
    reviewerId: values['reviewer-id'] ?? `${values.department}.system`,
    maxTotal: values['max-total'],
    maxSettlementDays: Number.parseInt(values['max-settlement-days'], 10),
  });
  await system.start();
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      system.stop().then(
        () => process.exit(0),
        (err) => {
          log('stop failed:', err.message);
          process.exit(1);
        },
      );
    });
  }
}

if (require.main === module) {
  main().catch((err) => {
    log('error:', err.message);
    process.exit(1);
  });
}

module.exports = { compareDecimal, parseDecimal, remarks, uuidV5 };
