import { describe, expect, it } from 'vitest';
import { commandIdFor } from '../../src/requestContext.ts';

describe('command IDs of a request', () => {
  it('are the request ID, then <id>.2, <id>.3 …, counted per request', () => {
    const a = { id: 'req-a' };
    const b = { id: 'req-b' };
    expect([commandIdFor(a), commandIdFor(a), commandIdFor(b), commandIdFor(a)]).toEqual(['req-a', 'req-a.2', 'req-b', 'req-a.3']);
  });
});
