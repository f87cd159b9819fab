import { describe, expect, it } from 'vitest';
import { serverAclAllows } from '../../src/actors/serverAcl.ts';

describe('m.room.server_acl', () => {
  it('lets everyone in when the room has no ACL', () => {
    expect(serverAclAllows(undefined, 'evil.example')).toBe(true);
  });
  it('denies by glob before it allows, ignoring the port', () => {
    const acl = { allow: ['*'], deny: ['*.evil.example', 'bad?.org'] };
    expect(serverAclAllows(acl, 'a.evil.example:8448')).toBe(false);
    expect(serverAclAllows(acl, 'bad1.org')).toBe(false);
    expect(serverAclAllows(acl, 'bad12.org')).toBe(true);
    expect(serverAclAllows(acl, 'good.example')).toBe(true);
  });
  it('allows only what the allow list matches', () => {
    const acl = { allow: ['*.trusted.example'] };
    expect(serverAclAllows(acl, 'hs.trusted.example')).toBe(true);
    expect(serverAclAllows(acl, 'other.example')).toBe(false);
    expect(serverAclAllows({ deny: [] }, 'anyone.example')).toBe(false);
  });
  it('refuses IP literals when allow_ip_literals is false', () => {
    const acl = { allow: ['*'], allow_ip_literals: false };
    expect(serverAclAllows(acl, '127.0.0.1:8448')).toBe(false);
    expect(serverAclAllows(acl, '[::1]:8448')).toBe(false);
    expect(serverAclAllows(acl, 'localhost:8448')).toBe(true);
    expect(serverAclAllows({ allow: ['*'] }, '127.0.0.1')).toBe(true);
  });
});
