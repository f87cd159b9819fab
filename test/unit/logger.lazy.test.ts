// The per-request logger Fastify gets from peekd: the pino child is only made when a line
// is written at an enabled level, and the lines it writes are the child's own (bindings,
// level, redaction).
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyChildLogger } from '../../src/logger.ts';

function capture(level: string): { parent: Logger; lines: Record<string, unknown>[]; children: () => number } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const parent = pino({ level, redact: { paths: ['*.password'], censor: '[redacted]' } }, sink);
  let made = 0;
  const child = parent.child;
  parent.child = function (this: Logger, ...args: Parameters<Logger['child']>) {
    made++;
    return child.apply(this, args);
  } as Logger['child'];
  return { parent, lines, children: () => made };
}

describe('lazyChildLogger', () => {
  it('makes no child for lines below the level, and writes enabled lines with the bindings', () => {
    const { parent, lines, children } = capture('warn');
    const log = lazyChildLogger(parent, { req_id: 'r1' }, {});
    log.info({ route: '/x' }, 'request');
    log.debug('detail');
    expect(children()).toBe(0);
    expect(lines).toEqual([]);
    expect(log.level).toBe('warn');
    expect(log.isLevelEnabled('info')).toBe(false);

    log.warn({ body: { password: 'hunter2' } }, 'slow');
    log.error(new Error('boom'), 'failed');
    expect(children()).toBe(1);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ req_id: 'r1', msg: 'slow', level: 40, body: { password: '[redacted]' } });
    expect(lines[1]).toMatchObject({ req_id: 'r1', msg: 'failed', level: 50, err: { message: 'boom' } });
  });

  it("follows a route's own level (Fastify's logLevel route option)", () => {
    const { parent, lines } = capture('info');
    const quiet = lazyChildLogger(parent, { req_id: 'r2' }, { level: 'error' });
    quiet.info('not written');
    quiet.warn('not written either');
    quiet.error('written');
    expect(lines.map((l) => l.msg)).toEqual(['written']);

    const chatty = lazyChildLogger(parent, { req_id: 'r3' }, { level: 'debug' });
    chatty.debug('written at debug');
    expect(lines.at(-1)).toMatchObject({ req_id: 'r3', msg: 'written at debug', level: 20 });
  });

  it('a level set on the request logger applies to it alone', () => {
    const { parent, lines } = capture('warn');
    const log = lazyChildLogger(parent, { req_id: 'r4' }, {});
    log.level = 'info';
    log.info('now written');
    parent.info('the parent still drops this');
    expect(lines.map((l) => l.msg)).toEqual(['now written']);
    log.child({ sub: 1 }).warn('from a child of the request logger');
    expect(lines.at(-1)).toMatchObject({ req_id: 'r4', sub: 1, msg: 'from a child of the request logger' });
  });
});
